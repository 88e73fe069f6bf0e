// Copy the nodes' SVG icons next to their compiled files (tsc only emits JavaScript).
const fs = require('node:fs');
const path = require('node:path');

for (const dir of ['nodes/Seqbridge', 'nodes/SeqbridgeTrigger']) {
	for (const file of fs.readdirSync(dir).filter((name) => name.endsWith('.svg') || name.endsWith('.node.json'))) {
		fs.mkdirSync(path.join('dist', dir), { recursive: true });
		fs.copyFileSync(path.join(dir, file), path.join('dist', dir, file));
	}
}
