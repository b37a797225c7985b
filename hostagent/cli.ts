export async function runHostagent(_args: string[]): Promise<number> {
  process.stderr.write("man8s hostagent: not built yet\n");
  return 64;
}
