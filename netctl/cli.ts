export async function runNetctl(_args: string[]): Promise<number> {
  process.stderr.write("man8s netctl: not built yet\n");
  return 64;
}
