'use strict';
// Each REST-hook trigger for real: subscribe a loopback URL, cause the event in Seqbridge, receive
// the signed notification, run perform on exactly what arrived, then unsubscribe.

const { App, appTester, useSeqbridge, unique } = require('./setup');
const { Receiver } = require('../../testing/seqbridge');

/** The request as Zapier hands it to perform: headers prefixed with Http-, the raw body as text. */
const asZapierRequest = (request) => ({
  cleanedRequest: JSON.parse(request.body),
  rawRequest: {
    method: request.method,
    headers: Object.fromEntries(
      Object.entries(request.headers).map(([name, value]) => [
        `Http-${name.replace(/(^|-)([a-z])/g, (m, dash, c) => dash + c.toUpperCase())}`,
        value,
      ]),
    ),
    content: request.body,
  },
});

describe('REST hook triggers', () => {
  const ctx = useSeqbridge();
  let receiver;

  beforeAll(async () => {
    receiver = await new Receiver().start();
  });
  afterAll(() => receiver.stop());

  /** Subscribe `key`, run `cause`, and give back what perform made of the notification. */
  const roundTrip = async (key, cause, match, inputData = {}) => {
    const trigger = App.triggers[key];
    const targetUrl = `${receiver.url}/zap/${key}/${unique()}`;
    const subscription = await appTester(trigger.operation.performSubscribe, { authData: ctx.authData, inputData, targetUrl });
    expect(subscription.secret).toMatch(/^whsec_/);
    expect(subscription.target_url).toBe(targetUrl);
    const subject = await cause();
    const request = await receiver.next(new URL(targetUrl).pathname, (body) => match(body, subject));
    const bundle = { authData: ctx.authData, inputData, subscribeData: subscription, ...asZapierRequest(request) };
    const results = await appTester(trigger.operation.perform, bundle);

    // A forged or altered notification never starts the Zap.
    const forged = { ...bundle, rawRequest: { ...bundle.rawRequest, content: request.body.replace('"data"', '"data" ') } };
    await expect(appTester(trigger.operation.perform, forged)).rejects.toThrow(/not signed by Seqbridge/);
    // Nothing to check against is a refusal too, never a pass.
    const secretless = { ...bundle, subscribeData: { ...subscription, secret: undefined } };
    await expect(appTester(trigger.operation.perform, secretless)).rejects.toThrow(/holds no subscription secret/);
    const bodiless = { ...bundle, rawRequest: { headers: bundle.rawRequest.headers } };
    await expect(appTester(trigger.operation.perform, bodiless)).rejects.toThrow(/no body to check/);

    const samples = await appTester(trigger.operation.performList, { authData: ctx.authData, inputData });
    const unsubscribed = await appTester(trigger.operation.performUnsubscribe, { authData: ctx.authData, subscribeData: subscription });
    expect(unsubscribed).toEqual({ id: subscription.id, unsubscribed: true });
    await expect(ctx.api.get(`/api/v1/hooks/subscriptions/${subscription.id}`)).rejects.toThrow(/404/);
    // Unsubscribing what is already gone is not an error (Zapier retries turning a Zap off).
    await appTester(trigger.operation.performUnsubscribe, { authData: ctx.authData, subscribeData: subscription });
    return { results, samples, subject, subscription };
  };

  it('New Enrollment', async () => {
    const sequence = await ctx.api.activeSequence(`Welcome ${unique()}`);
    const { results, samples, subject } = await roundTrip(
      'new_enrollment',
      async () => {
        const ada = await ctx.api.contact({ email: `ada-${unique()}@example.com`, first_name: 'Ada' });
        return (await ctx.api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: ada.id })).data;
      },
      (body, enrollment) => body.data.id === enrollment.id,
      { sequence_id: sequence.id },
    );
    expect(results).toHaveLength(1);
    const [notification] = results;
    expect(notification.type).toBe('enrollment.created');
    expect(notification.data).toMatchObject({ id: subject.id, status: 'active', sequence: { id: sequence.id, name: sequence.name } });
    expect(notification.data.contact.first_name).toBe('Ada');
    expect(samples.map((s) => s.id)).toContain(notification.id);
  });

  it('New Enrollment with a sequence filter lets other sequences\' enrollments pass by', async () => {
    const watched = await ctx.api.activeSequence(`Watched ${unique()}`);
    const other = await ctx.api.activeSequence(`Other ${unique()}`);
    const { results } = await roundTrip(
      'new_enrollment',
      async () => {
        const bob = await ctx.api.contact({ email: `bob-${unique()}@example.com` });
        return (await ctx.api.post(`/api/v1/sequences/${other.id}/enroll`, { contact_id: bob.id })).data;
      },
      (body, enrollment) => body.data.id === enrollment.id,
      { sequence_id: watched.id },
    );
    expect(results).toEqual([]);
  });

  it('Enrollment Completed', async () => {
    const sequence = await ctx.api.activeSequence(`Bot ${unique()}`);
    const { results, subject } = await roundTrip(
      'enrollment_completed',
      async () => {
        const cy = await ctx.api.contact({ email: `cy-${unique()}@example.com` });
        await ctx.api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: cy.id });
        return (await ctx.api.post(`/api/v1/sequences/${sequence.id}/unenroll`, { contact_id: cy.id })).data;
      },
      (body, ended) => body.data.id === ended.id,
    );
    expect(results[0].type).toBe('enrollment.completed');
    expect(results[0].data).toMatchObject({ id: subject.id, status: 'completed' });
  });

  it('Enrollment Exited', async () => {
    const sequence = await ctx.api.activeSequence(`Exit ${unique()}`);
    const { results, subject } = await roundTrip(
      'enrollment_exited',
      async () => {
        const dee = await ctx.api.contact({ email: `dee-${unique()}@example.com` });
        const enrollment = (await ctx.api.post(`/api/v1/sequences/${sequence.id}/enroll`, { contact_id: dee.id })).data;
        return (await ctx.api.request('DELETE', `/api/v1/sequences/${sequence.id}/enrollments/${enrollment.id}?reason=replied`)).data;
      },
      (body, exited) => body.data.id === exited.id,
    );
    expect(results[0].data).toMatchObject({ id: subject.id, status: 'exited', reason: 'replied' });
  });

  it('Contact Unsubscribed', async () => {
    const { results, subject } = await roundTrip(
      'contact_unsubscribed',
      async () => {
        const eve = await ctx.api.contact({ email: `eve-${unique()}@example.com`, first_name: 'Eve' });
        return (await ctx.api.patch(`/api/v1/contacts/${eve.id}`, { status: 'unsubscribed' })).data;
      },
      (body, contact) => body.data.id === contact.id,
    );
    expect(results[0].type).toBe('contact.unsubscribed');
    expect(results[0].data).toMatchObject({ id: subject.id, email: subject.email, status: 'unsubscribed', previous_status: 'active' });
  });

  it('Webhook Delivery Failed', async () => {
    const { results, subject } = await roundTrip(
      'delivery_dead',
      () => ctx.api.deadDelivery(`fay-${unique()}@example.com`),
      (body, deliveryId) => body.data.id === deliveryId,
    );
    expect(results[0].type).toBe('delivery.dead');
    expect(results[0].data).toMatchObject({ id: subject, hook: 'dead-end', status: 'dead' });
    expect(results[0].data.error).toBeTruthy();
  });

  it('every trigger offers samples shaped like its notifications, even before any event', async () => {
    for (const key of ['new_enrollment', 'enrollment_completed', 'enrollment_exited', 'contact_unsubscribed', 'delivery_dead']) {
      const samples = await appTester(App.triggers[key].operation.performList, { authData: ctx.authData, inputData: {} });
      expect(samples.length).toBeGreaterThan(0);
      for (const sample of samples) {
        expect(sample).toEqual(expect.objectContaining({ id: expect.any(String), type: expect.any(String), data: expect.any(Object) }));
      }
    }
  });
});
