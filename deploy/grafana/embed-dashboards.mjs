// For each dashboard (NAME.json) in SOURCE_DIR, writes into OUT_DIR:
//   NAME.ts            the dashboard as a TypeScript literal that must
//                      satisfy DashboardJson (dashboard-json.ts), for tsc
//                      (a JSON import would widen its strings to `string`
//                      and escape the check for unknown fields);
//   NAME.queries.json  a Prometheus rules file with every panel query as a
//                      recording rule, the dashboard's variables replaced
//                      by a value each, for promtool check rules to parse.
// Usage: node embed-dashboards.mjs SOURCE_DIR OUT_DIR
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error("usage: node embed-dashboards.mjs SOURCE_DIR OUT_DIR");
  process.exit(2);
}

// Grafana's own variables, by a value of the kind Grafana gives them.
const BUILTIN = { __rate_interval: "5m", __interval: "1m", __range: "1h" };

// The value a variable of the dashboard stands for: its current value,
// else its first option (a custom variable lists them comma-separated).
function variableValues(dashboard) {
  const values = { ...BUILTIN };
  for (const variable of dashboard.templating?.list ?? []) {
    const current = variable.current?.value;
    const first = typeof variable.query === "string" ? variable.query.split(",")[0].trim() : undefined;
    values[variable.name] = Array.isArray(current) ? current[0] : (current ?? first ?? "");
  }
  return values;
}

function substitute(expr, values, where) {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (text, braced, bare) => {
    const name = braced ?? bare;
    if (!(name in values)) throw new Error(`${where}: unknown variable ${text} in ${expr}`);
    return values[name];
  });
}

function panels(dashboard) {
  return (dashboard.panels ?? []).flatMap((panel) => [panel, ...(panel.panels ?? [])]);
}

mkdirSync(out, { recursive: true });
const files = readdirSync(source).filter((file) => file.endsWith(".json")).sort();
if (files.length === 0) throw new Error(`no dashboard (*.json) in ${source}`);
for (const file of files) {
  const name = basename(file, ".json");
  const text = readFileSync(join(source, file), "utf8");
  const dashboard = JSON.parse(text);

  // The literal starts on the first line, so that tsc's line numbers are
  // the JSON file's.
  writeFileSync(
    join(out, `${name}.ts`),
    `import type { DashboardJson } from "../dashboard-json"; export default ${text.trim()} satisfies DashboardJson;\n` +
      `// Written by embed-dashboards.mjs from ${file}; not kept.\n`,
  );

  const values = variableValues(dashboard);
  const rules = [];
  for (const panel of panels(dashboard)) {
    for (const target of panel.targets ?? []) {
      const where = `${file}: panel ${panel.id} "${panel.title}", query ${target.refId}`;
      if (typeof target.expr !== "string" || target.expr.trim() === "") throw new Error(`${where}: no expr`);
      rules.push({ record: `dashboard:panel_${panel.id}:${target.refId}`, expr: substitute(target.expr, values, where) });
    }
  }
  if (rules.length === 0) throw new Error(`${file}: no panel has a query`);
  // JSON is YAML: promtool reads it as a rules file.
  const queries = { groups: [{ name: `dashboard ${name}`, rules }] };
  writeFileSync(join(out, `${name}.queries.json`), JSON.stringify(queries, null, 2) + "\n");
  console.log(`${file}: ${rules.length} queries`);
}
