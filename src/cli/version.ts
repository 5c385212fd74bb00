// `ambit --version`: the version in package.json, read when asked, from the
// package this very file belongs to (dist/src/cli/ → ../../../package.json),
// so a copied or upgraded tree answers for itself rather than for the build.
import fs from 'node:fs';
import path from 'node:path';
import { AmbitError } from '../errors';

export const PACKAGE_JSON = path.resolve(__dirname, '../../../package.json');

/** `ambit 0.1.0 (node v20.19.0)`. */
export function versionLine(packageJson = PACKAGE_JSON): string {
  const broken = (why: string): AmbitError =>
    new AmbitError(
      'AMBIT_E_INTERNAL',
      `cannot tell ambit's version: ${packageJson} ${why}`,
      'the installation is incomplete: package.json belongs two levels above dist/ (reinstall, or run ambit from its repository)',
    );
  let text: string;
  try {
    text = fs.readFileSync(packageJson, 'utf8');
  } catch (err) {
    throw broken(`cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let version: unknown;
  try {
    version = (JSON.parse(text) as { version?: unknown }).version;
  } catch {
    throw broken('is not JSON');
  }
  if (typeof version !== 'string' || !version) throw broken('has no "version"');
  return `ambit ${version} (node ${process.version})`;
}
