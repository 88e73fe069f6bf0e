'use strict';
// End to end: the real n8n (pinned in e2e/runtime, installed once into $SEQBRIDGE_CACHE/n8n/)
// loads this package through N8N_CUSTOM_EXTENSIONS and runs two workflows against a live
// Seqbridge: one with `n8n execute`, one started by the Seqbridge Trigger while n8n serves.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startSeqbridge, Api, eventually, freePort } = require('../../testing/seqbridge');

const PACKAGE = path.resolve(__dirname, '..');
const CACHE = process.env.SEQBRIDGE_CACHE || path.join(os.homedir(), '.cache', 'seqbridge');
const unique = () => crypto.randomBytes(4).toString('hex');

/** The pinned n8n, installed with `npm ci` into a folder named by its lockfile's hash. */
const n8nBinary = () => {
	const lock = path.join(__dirname, 'runtime', 'package-lock.json');
	const hash = crypto.createHash('sha256').update(fs.readFileSync(lock)).digest('hex').slice(0, 16);
	const dir = path.join(CACHE, 'n8n', hash);
	if (!fs.existsSync(path.join(dir, '.installed'))) {
		fs.rmSync(dir, { recursive: true, force: true });
		fs.mkdirSync(dir, { recursive: true });
		for (const file of ['package.json', 'package-lock.json']) {
			fs.copyFileSync(path.join(__dirname, 'runtime', file), path.join(dir, file));
		}
		execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, stdio: 'inherit' });
		fs.writeFileSync(path.join(dir, '.installed'), new Date().toISOString());
	}
	return path.join(dir, 'node_modules', '.bin', 'n8n');
};

const n8nEnv = (home, extra = {}) => ({
	...process.env,
	N8N_USER_FOLDER: home,
	N8N_CUSTOM_EXTENSIONS: path.join(PACKAGE, 'dist'),
	N8N_ENCRYPTION_KEY: 'e2e-only-not-a-secret-0123456789',
	N8N_DIAGNOSTICS_ENABLED: 'false',
	N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
	N8N_PERSONALIZATION_ENABLED: 'false',
	N8N_TEMPLATES_ENABLED: 'false',
	N8N_RUNNERS_ENABLED: 'false',
	N8N_SECURE_COOKIE: 'false',
	N8N_LOG_LEVEL: 'warn',
	DB_SQLITE_POOL_SIZE: '1',
	...extra,
});

const credentialsFile = (home, server) => {
	const file = path.join(home, 'credentials.json');
	const credential = { id: 'sbCredE2E0000001', name: 'Seqbridge', type: 'seqbridgeApi', data: { baseUrl: server.url, apiKey: server.apiKey } };
	fs.writeFileSync(file, JSON.stringify([credential]));
	return file;
};

const node = (name, type, parameters, position, extra = {}) => ({
	id: crypto.randomUUID(),
	name,
	type,
	typeVersion: 1,
	position,
	parameters,
	...extra,
});

const CREDENTIALS = { seqbridgeApi: { id: 'sbCredE2E0000001', name: 'Seqbridge' } };

test('n8n runs the Seqbridge node and its trigger against a live Seqbridge', { timeout: 15 * 60 * 1000 }, async (t) => {
	const n8n = n8nBinary();
	const server = await startSeqbridge();
	const api = new Api(server.url, server.apiKey);
	const home = fs.mkdtempSync(path.join(os.tmpdir(), 'n8n-e2e-'));
	const run = (args, extra) => {
		try {
			return execFileSync(n8n, args, { env: n8nEnv(home, extra), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
		} catch (error) {
			throw new Error(`n8n ${args[0]} failed: ${String(error.stdout).slice(-3000)} ${String(error.stderr).slice(-3000)}`);
		}
	};
	t.after(async () => {
		await server.stop();
		fs.rmSync(home, { recursive: true, force: true });
	});
	run(['import:credentials', `--input=${credentialsFile(home, server)}`]);

	await t.test('`n8n execute`: create a contact, enroll it, list the enrollments', async () => {
		const sequence = await api.activeSequence(`n8n welcome ${unique()}`);
		const email = `ada-${unique()}@example.com`;
		const workflow = {
			id: 'sbWorkflowExec01',
			name: 'Seqbridge e2e: execute',
			active: false,
			settings: {},
			nodes: [
				node('Start', 'n8n-nodes-base.manualTrigger', {}, [0, 0]),
				node('Create contact', 'CUSTOM.seqbridge', {
					resource: 'contact', operation: 'create', email, fields: { first_name: 'Ada', tags: 'n8n, lead' },
				}, [220, 0], { credentials: CREDENTIALS }),
				node('Enroll', 'CUSTOM.seqbridge', {
					resource: 'enrollment', operation: 'enroll', sequenceId: sequence.id, identifyBy: 'contactId',
					contactId: '={{ $json.id }}', options: { enrollmentSource: 'n8n-e2e', enrollmentData: '{"campaign": "e2e"}' },
				}, [440, 0], { credentials: CREDENTIALS }),
				node('List enrollments', 'CUSTOM.seqbridge', {
					resource: 'enrollment', operation: 'getAll', sequenceId: sequence.id, returnAll: true, filters: { status: 'active' },
				}, [660, 0], { credentials: CREDENTIALS }),
			],
			connections: {
				Start: { main: [[{ node: 'Create contact', type: 'main', index: 0 }]] },
				'Create contact': { main: [[{ node: 'Enroll', type: 'main', index: 0 }]] },
				Enroll: { main: [[{ node: 'List enrollments', type: 'main', index: 0 }]] },
			},
		};
		const file = path.join(home, 'execute.json');
		fs.writeFileSync(file, JSON.stringify(workflow));
		run(['import:workflow', `--input=${file}`]);
		run(['execute', `--id=${workflow.id}`]);

		// The effect, read back through Seqbridge's API.
		const [contact] = (await api.get(`/api/v1/contacts?email=${encodeURIComponent(email)}`)).data;
		assert.equal(contact.first_name, 'Ada');
		assert.deepEqual(contact.tags.sort(), ['lead', 'n8n']);
		const [enrollment] = (await api.get(`/api/v1/sequences/${sequence.id}/enrollments`)).data;
		assert.equal(enrollment.contact_id, contact.id);
		assert.equal(enrollment.enrollment_source, 'n8n-e2e');
		assert.deepEqual(enrollment.enrollment_data, { campaign: 'e2e' });
	});

	await t.test('Seqbridge Trigger: activation subscribes, an enrollment runs the workflow, forgeries are refused', async () => {
		const sequence = await api.activeSequence(`n8n trigger ${unique()}`);
		const port = await freePort();
		const webhookId = crypto.randomUUID();
		const workflow = {
			id: 'sbWorkflowTrig01',
			name: 'Seqbridge e2e: trigger',
			active: false,
			settings: {},
			nodes: [
				node('On enrollment', 'CUSTOM.seqbridgeTrigger', { event: 'enrollment.created', sequenceId: sequence.id }, [0, 0], {
					credentials: CREDENTIALS,
					webhookId,
				}),
				node('Tag the contact', 'CUSTOM.seqbridge', {
					resource: 'contact', operation: 'update', contactId: '={{ $json.data.contact.id }}',
					updateFields: { tags: 'seen-by-n8n', source: '={{ $json.type }}' },
				}, [220, 0], { credentials: CREDENTIALS }),
			],
			connections: { 'On enrollment': { main: [[{ node: 'Tag the contact', type: 'main', index: 0 }]] } },
		};
		const file = path.join(home, 'trigger.json');
		fs.writeFileSync(file, JSON.stringify(workflow));
		run(['import:workflow', `--input=${file}`]);
		run(['update:workflow', `--id=${workflow.id}`, '--active=true']);

		const base = `http://127.0.0.1:${port}`;
		const env = n8nEnv(home, { N8N_PORT: String(port), N8N_LISTEN_ADDRESS: '127.0.0.1', N8N_HOST: '127.0.0.1', WEBHOOK_URL: `${base}/` });
		const proc = spawn(n8n, ['start'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
		let log = '';
		proc.stdout.on('data', (chunk) => (log = (log + chunk).slice(-6000)));
		proc.stderr.on('data', (chunk) => (log = (log + chunk).slice(-6000)));
		t.after(async () => {
			if (proc.exitCode === null) {
				proc.kill('SIGTERM');
				await Promise.race([new Promise((resolve) => proc.once('exit', resolve)), new Promise((r) => setTimeout(r, 20000))]);
				if (proc.exitCode === null) proc.kill('SIGKILL');
			}
		});

		// Activation made the subscription, for the workflow's production webhook URL.
		const targetUrl = `${base}/webhook/${webhookId}/webhook`;
		const subscription = await eventually(async () => {
			const subscriptions = (await api.get('/api/v1/hooks/subscriptions?event=enrollment.created')).data;
			return subscriptions.find((s) => s.target_url === targetUrl);
		}, `n8n to subscribe ${targetUrl} (n8n said: ${log})`, 180000);
		assert.equal(subscription.status, 'active');

		// Other sequences' enrollments are ignored; this one's runs the workflow.
		const other = await api.activeSequence(`n8n other ${unique()}`);
		const bystander = await api.contact({ email: `bob-${unique()}@example.com` });
		await api.post(`/api/v1/sequences/${other.id}/enroll`, { contact_id: bystander.id });
		const eve = await api.contact({ email: `eve-${unique()}@example.com` });
		await api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: eve.id });
		const tagged = await eventually(async () => {
			const contact = (await api.get(`/api/v1/contacts/${eve.id}`)).data;
			return contact.tags.includes('seen-by-n8n') ? contact : null;
		}, `the workflow to tag ${eve.email} (n8n said: ${log})`, 60000);
		assert.equal(tagged.source, 'enrollment.created');
		assert.deepEqual((await api.get(`/api/v1/contacts/${bystander.id}`)).data.tags, []);

		// A notification without Seqbridge's signature never starts the workflow.
		const forged = await fetch(targetUrl, {
			method: 'POST',
			headers: { 'Content-Type': 'application/json', 'webhook-id': 'msg_forged', 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': 'v1,AAAA' },
			body: JSON.stringify({ id: 'x', type: 'enrollment.created', data: { sequence_id: sequence.id, contact: { id: bystander.id } } }),
		});
		assert.equal(forged.status, 401);
		assert.equal((await forged.json()).error.code, 'invalid_signature');
		assert.deepEqual((await api.get(`/api/v1/contacts/${bystander.id}`)).data.tags, []);
	});
});
