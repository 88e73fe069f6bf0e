'use strict';
// Every action and search against a live Seqbridge; the effect is read back through the API.

const { App, appTester, useSeqbridge, unique } = require('./setup');

const parse = (error) => JSON.parse(error.message);

describe('actions', () => {
  const ctx = useSeqbridge();
  const run = (kind, key, inputData) => appTester(App[kind][key].operation.perform, { authData: ctx.authData, inputData });

  it('Create or Update Contact creates, then updates the same contact (tags added, attributes merged)', async () => {
    const email = `Ada-${unique()}@Example.com`;
    const created = await run('creates', 'contact', {
      email,
      phone: '+1 650 555 1234',
      first_name: 'Ada',
      tags: ['lead'],
      attributes: { plan: 'free', crm_id: '501' },
    });
    expect(created).toMatchObject({ result: 'created', email, phone: '+16505551234', tags: ['lead'] });

    const updated = await run('creates', 'contact', {
      email: email.toLowerCase(),
      last_name: 'Lovelace',
      first_name: '',
      tags: ['vip', 'lead'],
      attributes: { plan: 'pro' },
    });
    expect(updated).toMatchObject({ result: 'updated', id: created.id, first_name: 'Ada', last_name: 'Lovelace' });
    const stored = (await ctx.api.get(`/api/v1/contacts/${created.id}`)).data;
    expect(stored.tags.sort()).toEqual(['lead', 'vip']);
    expect(stored.attributes).toEqual({ plan: 'pro', crm_id: '501' });
    const error = await run('creates', 'contact', { first_name: 'Nobody' }).catch((e) => e);
    expect(parse(error).code).toBe('missing_field');
  });

  it('Enroll Contact in Sequence by email or by id, with enrollment data', async () => {
    const sequence = await ctx.api.activeSequence(`Enroll ${unique()}`);
    const ada = await ctx.api.contact({ email: `ada-${unique()}@example.com` });
    const bob = await ctx.api.contact({ email: `bob-${unique()}@example.com` });
    const byEmail = await run('creates', 'enrollment', {
      sequence_id: sequence.id,
      email: ada.email.toUpperCase(),
      enrollment_data: { campaign: 'spring' },
    });
    expect(byEmail).toMatchObject({ contact_id: ada.id, status: 'active', enrollment_source: 'zapier', enrollment_data: { campaign: 'spring' } });
    const byId = await run('creates', 'enrollment', { sequence_id: sequence.id, contact_id: bob.id, enrollment_source: 'webinar' });
    expect(byId).toMatchObject({ contact_id: bob.id, enrollment_source: 'webinar' });
    const listed = (await ctx.api.get(`/api/v1/sequences/${sequence.id}/enrollments?status=active`)).data;
    expect(listed.map((e) => e.contact_id).sort()).toEqual([ada.id, bob.id].sort());

    // A replayed step answers the live enrollment (no second one), unless the Zap asks to stop.
    const again = await run('creates', 'enrollment', { sequence_id: sequence.id, email: bob.email });
    expect(again).toMatchObject({ id: byId.id, contact_id: bob.id, status: 'active', already_enrolled: true });
    expect(byId.already_enrolled).toBe(false);
    expect((await ctx.api.get(`/api/v1/sequences/${sequence.id}/enrollments`)).meta.total).toBe(2);
    const strict = await run('creates', 'enrollment', { sequence_id: sequence.id, contact_id: bob.id, if_enrolled: 'error' }).catch((e) => e);
    expect(parse(strict)).toMatchObject({ code: 'already_enrolled', status: 409 });
    const draft = (await ctx.api.post('/api/v1/sequences', { name: `Draft ${unique()}` })).data;
    const notActive = await run('creates', 'enrollment', { sequence_id: draft.id, contact_id: bob.id }).catch((e) => e);
    expect(parse(notActive)).toMatchObject({ code: 'sequence_not_active', status: 422 });
    expect(parse(notActive).message).toMatch(/sequence_status:draft/);
  });

  it('Unenroll Contact from one sequence, or from everything, with a reason', async () => {
    const one = await ctx.api.activeSequence(`One ${unique()}`);
    const two = await ctx.api.activeSequence(`Two ${unique()}`);
    const cy = await ctx.api.contact({ email: `cy-${unique()}@example.com` });
    for (const sequence of [one, two]) {
      await ctx.api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: cy.id });
    }
    const fromOne = await run('creates', 'unenrollment', { email: cy.email, sequence_id: one.id, reason: 'replied' });
    expect(fromOne).toMatchObject({ contact_id: cy.id, enrollments_ended: 1, sequence_ids: [one.id], reason: 'replied' });
    const [exited] = (await ctx.api.get(`/api/v1/sequences/${one.id}/enrollments`)).data;
    expect(exited).toMatchObject({ status: 'exited', exit_reason: 'replied' });
    expect((await ctx.api.get(`/api/v1/sequences/${two.id}/enrollments?status=active`)).meta.total).toBe(1);

    const fromAll = await run('creates', 'unenrollment', { contact_id: cy.id, reason: 'unsubscribed' });
    expect(fromAll).toMatchObject({ enrollments_ended: 1, sequence_ids: [two.id] });
    const again = await run('creates', 'unenrollment', { contact_id: cy.id, reason: 'unsubscribed' });
    expect(again.enrollments_ended).toBe(0);
    const unknown = await run('creates', 'unenrollment', { email: `ghost-${unique()}@example.com`, reason: 'manual' }).catch((e) => e);
    expect(parse(unknown).code).toBe('not_found');
  });

  it('Add Contacts to Event Queue by id and email; unknown emails are reported', async () => {
    const queue = await ctx.api.eventQueue(`Queue ${unique()}`);
    const dee = await ctx.api.contact({ email: `dee-${unique()}@example.com` });
    const eve = await ctx.api.contact({ email: `eve-${unique()}@example.com` });
    const ghost = `ghost-${unique()}@example.com`;
    const result = await run('creates', 'queue_enrollment', {
      queue_id: queue.id,
      contact_ids: [dee.id],
      emails: [eve.email, ghost],
      deal_id: 'deal-42',
    });
    expect(result).toMatchObject({ queue_id: queue.id, enrolled: 2, skipped: 1, unknown_emails: [ghost] });
    const tasks = (await ctx.api.get(`/api/v1/event-queues/${queue.id}/enrollments`)).data;
    expect(tasks.map((t) => t.contact_id).sort()).toEqual([dee.id, eve.id].sort());
    expect(tasks.every((t) => t.deal_id === 'deal-42' && t.status === 'pending')).toBe(true);
    const repeat = await run('creates', 'queue_enrollment', { queue_id: queue.id, contact_ids: [dee.id] });
    expect(repeat).toMatchObject({ enrolled: 0, skipped: 1 });
    expect(repeat.results[0].code).toBe('already_enrolled');
  });

  it('Pause or Resume Enrollment', async () => {
    const sequence = await ctx.api.activeSequence(`Pause ${unique()}`);
    const fay = await ctx.api.contact({ email: `fay-${unique()}@example.com` });
    const enrollment = (await ctx.api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: fay.id })).data;
    const input = { sequence_id: sequence.id, enrollment_id: enrollment.id };
    const paused = await run('creates', 'enrollment_status', { ...input, status: 'paused' });
    expect(paused).toMatchObject({ id: enrollment.id, status: 'paused' });
    expect(paused.paused_at).toBeTruthy();
    const resumed = await run('creates', 'enrollment_status', { ...input, status: 'active' });
    expect(resumed).toMatchObject({ status: 'active', paused_at: null });
    await ctx.api.request('DELETE', `/api/v1/sequences/${sequence.id}/enrollments/${enrollment.id}`);
    const ended = await run('creates', 'enrollment_status', { ...input, status: 'paused' }).catch((e) => e);
    expect(parse(ended).code).toBe('enrollment_ended');
  });

  it('Find Contact by email or phone; Find or Create Contact creates when the search is empty', async () => {
    const gil = await ctx.api.contact({ email: `gil-${unique()}@example.com`, phone: '+44 20 7946 0958' });
    expect((await run('searches', 'contact', { email: gil.email.toUpperCase() })).map((c) => c.id)).toEqual([gil.id]);
    expect((await run('searches', 'contact', { phone: '0044 20 7946 0958' })).map((c) => c.id)).toEqual([gil.id]);
    const newEmail = `hal-${unique()}@example.com`;
    expect(await run('searches', 'contact', { email: newEmail })).toEqual([]);
    // Search-or-create: Zapier runs the create with the same input when the search finds nothing.
    const pair = App.searchOrCreates.contact;
    expect(App.creates[pair.create]).toBeDefined();
    const made = await run('creates', pair.create, { email: newEmail });
    expect((await run('searches', pair.search, { email: newEmail })).map((c) => c.id)).toEqual([made.id]);
  });

  it('Find Sequence by name; Find or Create Sequence; the dropdowns list sequences and queues', async () => {
    const name = `Nurture ${unique()}`;
    const sequence = await ctx.api.activeSequence(name);
    await ctx.api.activeSequence(`${name} extended`);
    const found = await run('searches', 'sequence', { name: name.toUpperCase() });
    expect(found.map((s) => s.id)).toEqual([sequence.id]);
    const partial = await run('searches', 'sequence', { name: name.slice(0, 10) });
    expect(partial.length).toBeGreaterThanOrEqual(2);

    const draftName = `Draft ${unique()}`;
    expect(await run('searches', 'sequence', { name: draftName })).toEqual([]);
    const draft = await run('creates', App.searchOrCreates.sequence.create, { name: draftName, from_email: 'hi@example.com' });
    expect(draft).toMatchObject({ name: draftName, status: 'draft', from_email: 'hi@example.com' });
    expect((await run('searches', 'sequence', { name: draftName, status: 'draft' })).map((s) => s.id)).toEqual([draft.id]);

    const archived = (await ctx.api.post('/api/v1/sequences', { name: `Old ${unique()}` })).data;
    await ctx.api.patch(`/api/v1/sequences/${archived.id}`, { status: 'archived' });
    const dropdown = await appTester(App.triggers.sequence_list.operation.perform, { authData: ctx.authData, inputData: {}, meta: { page: 0 } });
    const byId = Object.fromEntries(dropdown.map((s) => [s.id, s.name]));
    expect(byId[sequence.id]).toBe(name);
    expect(byId[draft.id]).toBe(`${draftName} (draft)`);
    expect(byId[archived.id]).toBeUndefined();

    const queue = await ctx.api.eventQueue(`Dropdown queue ${unique()}`);
    const queues = await appTester(App.triggers.queue_list.operation.perform, { authData: ctx.authData, inputData: {}, meta: { page: 0 } });
    expect(queues.map((q) => q.id)).toContain(queue.id);
  });
});
