export async function runAgent(_args: string[]): Promise<number> {
  process.stderr.write("man8s agent: not built yet\n");
  return 64;
}
