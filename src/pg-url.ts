/**
 * A PostgreSQL connection URL as braid may print it: the password, in the
 * user part or as a `password` parameter, replaced by `***`. Logs and
 * errors name a store by this, never by the URL it was given.
 */
export function redactedUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL we can take apart: keep what cannot be a password.
    return url
      .replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@')
      .replace(/([?&]password=)[^&]*/i, '$1***');
  }
  if (parsed.password !== '') parsed.password = '***';
  for (const key of [...parsed.searchParams.keys()]) {
    if (key.toLowerCase() === 'password') parsed.searchParams.set(key, '***');
  }
  return parsed.toString();
}

/** Whether `value` names a PostgreSQL store (postgres:// or postgresql://). */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}
