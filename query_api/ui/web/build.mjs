// Build of the Runstream UI: no bundler. Copies the plain ES modules, HTML and CSS of src/
// and uPlot's browser build (from node_modules, installed by `npm ci`) into ../static/,
// which query_api.ui serves. Run: `npm ci --no-audit --no-fund && node build.mjs`.
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static");
const uplot = join(here, "node_modules", "uplot", "dist");
const vendored = ["uPlot.iife.min.js", "uPlot.min.css"];

for (const f of vendored) {
  if (!existsSync(join(uplot, f))) {
    console.error(`missing ${join(uplot, f)}: run \`npm ci --no-audit --no-fund\` first`);
    process.exit(1);
  }
}
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
cpSync(join(here, "src"), out, { recursive: true });
for (const f of vendored) cpSync(join(uplot, f), join(out, f));
const { version } = JSON.parse(
  (await import("node:fs")).readFileSync(join(here, "node_modules", "uplot", "package.json"), "utf8"),
);
writeFileSync(join(out, "BUILD.json"), JSON.stringify({ uplot: version, built_at: new Date().toISOString() }) + "\n");
console.log(`runstream ui: built ${out} (uPlot ${version})`);
