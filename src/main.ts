#!/usr/bin/env node
// `npm start`, `node dist/main.js` and the container's entry point: the
// virt-graph command, which serves when given no command (`node dist/main.js
// --config FILE`) and takes the others as well (`node dist/main.js
// check-config FILE`). Exits with the command's code (src/cli/exit-codes.ts).
import { runVirtGraph } from './cli/virt-graph.js';

process.exit(await runVirtGraph(process.argv.slice(2)));
