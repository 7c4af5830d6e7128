/**
 * One line of CSV as buildx reads a flag's value (go-csvvalue, strict
 * quotes): `a=1,"src=/a,b"` is two fields; `""` inside quotes is one quote.
 */

/** The fields of `line`, or the reason it is not CSV. */
export function csvFields(line: string): { fields: string[] } | { problem: string } {
  const fields: string[] = [];
  let rest = line;
  for (;;) {
    if (!rest.startsWith('"')) {
      const comma = rest.indexOf(',');
      const field = comma < 0 ? rest : rest.slice(0, comma);
      if (field.includes('"')) return { problem: `a bare " in the unquoted field ${field}` };
      fields.push(field);
      if (comma < 0) return { fields };
      rest = rest.slice(comma + 1);
      continue;
    }
    // A quoted field runs to the first quote that is not doubled.
    let field = '';
    let at = 1;
    for (;;) {
      const quote = rest.indexOf('"', at);
      if (quote < 0) return { problem: 'a quoted field is not closed' };
      field += rest.slice(at, quote);
      if (rest[quote + 1] === '"') {
        field += '"';
        at = quote + 2;
        continue;
      }
      rest = rest.slice(quote + 1);
      break;
    }
    fields.push(field);
    if (rest === '') return { fields };
    if (!rest.startsWith(',')) return { problem: 'a closing quote is not followed by a comma' };
    rest = rest.slice(1);
  }
}
