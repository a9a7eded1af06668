// Validates an AsyncAPI document with the official parser (@asyncapi/parser, pinned in package.json): the
// document's own schema, its $refs (the event schemas beside it in schemas/) and the parser's built-in rules.
// Usage: node tests/asyncapi/validate.mjs schemas/asyncapi.yaml
// Prints one line per problem and exits 1 on any error-severity diagnostic; prints a summary and exits 0 otherwise.
import { resolve } from "node:path";
import { Parser, fromFile } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs ASYNCAPI_FILE");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, resolve(path)).parse();
const severity = ["error", "warning", "info", "hint"];
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${severity[d.severity] ?? d.severity}: ${d.code}: ${d.message} at /${d.path.join("/")}`);
}
if (errors.length || !document) {
  console.error(`error: ${path} is not a valid AsyncAPI document (${errors.length} error(s))`);
  process.exit(1);
}
const operations = document.operations().all();
console.log(
  `${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${operations.length} operations`,
);
