'use strict';

const { App, appTester, useSeqbridge } = require('./setup');
const { ORG } = require('../../testing/seqbridge');

describe('authentication', () => {
  const ctx = useSeqbridge();

  it('tests the key with /api/v1/me and labels the connection with the organization', async () => {
    const me = await appTester(App.authentication.test, { authData: ctx.authData });
    expect(me.organization_name).toBe(ORG);
    expect(me.scopes).toEqual(['*']);
    const label = await appTester(App.authentication.connectionLabel, { authData: ctx.authData, inputData: me });
    expect(label).toBe(`${ORG} (${me.key_name})`);
  });

  it('asks to reconnect when the key is wrong, with Seqbridge\'s reason', async () => {
    const authData = { ...ctx.authData, api_key: 'rk_live_not-a-real-key' };
    const failure = appTester(App.authentication.test, { authData });
    await expect(failure).rejects.toMatchObject({ name: 'ExpiredAuthError' });
    await expect(appTester(App.authentication.test, { authData })).rejects.toThrow(/not valid or has been revoked.*Reconnect/);
  });
});
