/**
 * ELF identification: which machine a binary was built for, read from the
 * first bytes of the file, and which machine an OCI platform expects.
 */

/** Bytes of a file that `parseElfHeader` may look at; the rest is never needed. */
export const ELF_HEADER_BYTES = 64;

export type ElfClass = 32 | 64;
export type Endianness = 'little' | 'big';

export interface ElfHeader {
  class: ElfClass;
  endianness: Endianness;
  /** `e_machine`, e.g. 62 for x86-64. */
  machine: number;
  machineName: string;
  /** What a person reads, in the manner of file(1): `ARM aarch64 ELF`, `ARM ELF (32-bit)`. */
  description: string;
}

/** What a binary for a platform must carry in its ELF header. */
export interface ElfExpectation {
  machine: number;
  class: ElfClass;
  endianness: Endianness;
}

export const EM_386 = 3;
export const EM_MIPS = 8;
export const EM_PPC = 20;
export const EM_PPC64 = 21;
export const EM_S390 = 22;
export const EM_ARM = 40;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;
export const EM_RISCV = 243;
export const EM_LOONGARCH = 258;

interface Machine {
  name: string;
  /** The class this machine nearly always has; any other class is spelled out. */
  usualClass?: ElfClass;
  /** The byte order this machine nearly always has; any other order is spelled out. */
  usualEndianness?: Endianness;
}

// Bi-endian or dual-class machines leave the usual value out, so the description names it.
const MACHINES: ReadonlyMap<number, Machine> = new Map<number, Machine>([
  [2, { name: 'SPARC', usualClass: 32, usualEndianness: 'big' }],
  [EM_386, { name: 'Intel 80386', usualClass: 32, usualEndianness: 'little' }],
  [4, { name: 'Motorola m68k', usualClass: 32, usualEndianness: 'big' }],
  [EM_MIPS, { name: 'MIPS' }],
  [15, { name: 'PA-RISC', usualEndianness: 'big' }],
  [EM_PPC, { name: 'PowerPC', usualClass: 32, usualEndianness: 'big' }],
  [EM_PPC64, { name: 'PowerPC64', usualClass: 64 }],
  [EM_S390, { name: 'IBM S/390', usualEndianness: 'big' }],
  [EM_ARM, { name: 'ARM', usualEndianness: 'little' }],
  [41, { name: 'Alpha', usualClass: 64, usualEndianness: 'little' }],
  [42, { name: 'Renesas SH', usualClass: 32 }],
  [43, { name: 'SPARC V9', usualClass: 64, usualEndianness: 'big' }],
  [50, { name: 'IA-64', usualClass: 64, usualEndianness: 'little' }],
  [EM_X86_64, { name: 'x86-64', usualClass: 64, usualEndianness: 'little' }],
  [EM_AARCH64, { name: 'ARM aarch64', usualClass: 64, usualEndianness: 'little' }],
  [EM_RISCV, { name: 'RISC-V', usualEndianness: 'little' }],
  [247, { name: 'eBPF', usualClass: 64 }],
  [EM_LOONGARCH, { name: 'LoongArch', usualClass: 64, usualEndianness: 'little' }],
  [0x9026, { name: 'Alpha', usualClass: 64, usualEndianness: 'little' }],
]);

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
// e_ident (16 bytes) + e_type (2) + e_machine (2): enough to know the machine.
const MACHINE_END = 20;

/**
 * The ELF header at the start of `bytes` (the first 64 bytes of a file are
 * plenty), or undefined when the bytes are not an ELF file.
 */
export function parseElfHeader(bytes: Uint8Array): ElfHeader | undefined {
  if (bytes.length < MACHINE_END) return undefined;
  if (ELF_MAGIC.some((b, i) => bytes[i] !== b)) return undefined;
  const elfClass = bytes[4] === 1 ? 32 : bytes[4] === 2 ? 64 : undefined;
  const endianness = bytes[5] === 1 ? 'little' : bytes[5] === 2 ? 'big' : undefined;
  if (elfClass === undefined || endianness === undefined) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const machine = view.getUint16(18, endianness === 'little');
  const known = MACHINES.get(machine);
  const machineName = known?.name ?? `unknown machine ${machine}`;
  const order = endianness !== known?.usualEndianness ? ` ${endianness}-endian` : '';
  const bits = elfClass !== known?.usualClass ? ` (${elfClass}-bit)` : '';
  return {
    class: elfClass,
    endianness,
    machine,
    machineName,
    description: `${machineName}${order} ELF${bits}`,
  };
}

// OCI (GOARCH) architecture names of Linux platforms and what their binaries carry.
const LINUX_ARCHITECTURES: ReadonlyMap<string, ElfExpectation> = new Map<string, ElfExpectation>([
  ['amd64', { machine: EM_X86_64, class: 64, endianness: 'little' }],
  ['386', { machine: EM_386, class: 32, endianness: 'little' }],
  ['arm', { machine: EM_ARM, class: 32, endianness: 'little' }],
  ['arm64', { machine: EM_AARCH64, class: 64, endianness: 'little' }],
  ['ppc64le', { machine: EM_PPC64, class: 64, endianness: 'little' }],
  ['ppc64', { machine: EM_PPC64, class: 64, endianness: 'big' }],
  ['s390x', { machine: EM_S390, class: 64, endianness: 'big' }],
  ['riscv64', { machine: EM_RISCV, class: 64, endianness: 'little' }],
  ['mips', { machine: EM_MIPS, class: 32, endianness: 'big' }],
  ['mipsle', { machine: EM_MIPS, class: 32, endianness: 'little' }],
  ['mips64', { machine: EM_MIPS, class: 64, endianness: 'big' }],
  ['mips64le', { machine: EM_MIPS, class: 64, endianness: 'little' }],
  ['loong64', { machine: EM_LOONGARCH, class: 64, endianness: 'little' }],
]);

/**
 * The ELF header a binary of `platform` must have, or undefined when braid
 * has no expectation (another OS than Linux, an unknown architecture).
 * The variant (arm v6/v7, amd64 v3) is not visible in the ELF header and is ignored.
 */
export function expectedElf(platform: {
  os: string;
  architecture: string;
  variant?: string;
}): ElfExpectation | undefined {
  if (platform.os !== 'linux') return undefined;
  return LINUX_ARCHITECTURES.get(platform.architecture);
}

/** Whether a binary with `header` runs natively on a platform that expects `expected`. */
export function elfMatches(header: ElfExpectation, expected: ElfExpectation): boolean {
  return (
    header.machine === expected.machine &&
    header.class === expected.class &&
    header.endianness === expected.endianness
  );
}
