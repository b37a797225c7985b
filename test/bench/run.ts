// `bun run bench`: every benchmark section, one after the other, in one run.
const sections = ["init", "netctl", "hostagent", "probes", "pull", "cluster"];
for (const s of sections) {
  const file = `${import.meta.dir}/${s}.ts`;
  if (!(await Bun.file(file).exists())) continue;
  const mod = (await import(file)) as { run: () => Promise<void> };
  await mod.run();
}
