// ssh2's own conversion of an OpenSSL signature (DER for ECDSA and DSA) to
// the SSH wire form; not in ssh2's public API nor in @types/ssh2.
declare module 'ssh2/lib/protocol/utils.js' {
  const utils: {
    convertSignature(signature: Buffer, keyType: string): Buffer | false | undefined;
  };
  export default utils;
}
