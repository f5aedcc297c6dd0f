import { parse } from 'yaml';

/** YAML → plain data, with anchors and merge keys (`<<: *x`) resolved as Compose does. */
export async function parseYaml(text: string): Promise<unknown> {
  return parse(text, { merge: true, maxAliasCount: 1000 }) as unknown;
}
