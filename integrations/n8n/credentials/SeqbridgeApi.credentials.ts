import type {
	IAuthenticateGeneric,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

export class SeqbridgeApi implements ICredentialType {
	name = 'seqbridgeApi';

	displayName = 'Seqbridge API';

	icon = 'file:../nodes/Seqbridge/seqbridge.svg' as const;

	documentationUrl = 'https://www.npmjs.com/package/n8n-nodes-seqbridge#credentials';

	properties: INodeProperties[] = [
		{
			displayName: 'Base URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://localhost:8000',
			placeholder: 'https://seqbridge.example.com',
			description: 'The address of your Seqbridge server, without /api',
			required: true,
		},
		{
			displayName: 'API Key',
			name: 'apiKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				'A key that starts with rk_live_, made with "seqbridge keys create --org YOUR_ORG --scope \'*\' --name n8n"',
			required: true,
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				Authorization: '=Bearer {{$credentials.apiKey}}',
			},
		},
	};

	// GET /api/v1/me answers any valid key, whatever its scopes.
	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.baseUrl.replace(/\\/+$/, "")}}',
			url: '/api/v1/me',
			method: 'GET',
		},
	};
}
