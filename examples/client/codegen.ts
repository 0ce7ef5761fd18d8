import type { CodegenConfig } from '@graphql-codegen/cli';

// GraphQL Code Generator's client preset: typed documents for the operations
// in queries.ts, checked against the published schema (any operation or field
// the gateway does not serve fails the build, not the user).
//
//   npx graphql-codegen --config codegen.ts    # from this folder: writes gql/
const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: ['queries.ts'],
  generates: {
    'gql/': {
      preset: 'client',
      config: {
        // DateTime is an ISO 8601 string on the wire; SafeInt a JSON number
        // within ±2^53, so a plain number holds it exactly.
        scalars: { DateTime: 'string', SafeInt: 'number' },
        // A scalar added to the schema later fails here, instead of typing as `any`.
        strictScalars: true,
        useTypeImports: true,
        enumsAsTypes: true,
        // Node's ESM loader, and tsc with NodeNext, want the extension in relative imports.
        emitLegacyCommonJSImports: false,
        // Documents as strings, which fetch sends as they are: no graphql-js in the client.
        // Apollo Client and urql take the default (a DocumentNode) instead.
        documentMode: 'string',
      },
      presetConfig: {
        // Masking serves fragments colocated with components; this example has none.
        fragmentMasking: false,
        // gql/persisted-documents.json is the manifest the gateway's `server.trustedDocuments` reads.
        persistedDocuments: { hashAlgorithm: 'sha256' },
      },
    },
  },
};

export default config;
