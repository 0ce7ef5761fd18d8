// The operations this client runs. `graphql()` is generated from them
// (gql/gql.ts): each call returns a document typed with its result and its
// variables, so a field renamed in the schema breaks this build.
import { graphql } from './gql/index.js';

export const VmListQuery = graphql(`
  query VmList($first: Int, $after: String) {
    virtualMachines(first: $first, after: $after) {
      totalCount
      pageInfo {
        hasNextPage
        endCursor
      }
      edges {
        cursor
        node {
          id
          name
          powerState
          memoryMiB
          host {
            id
            name
          }
          disks {
            target
            device
            bus
            format
            capacityBytes
          }
        }
      }
    }
  }
`);

export const StartVmMutation = graphql(`
  mutation StartVm($input: VmOperationInput!) {
    startVm(input: $input) {
      vm {
        id
        powerState
      }
      task {
        id
        state
        createdAt
      }
      userErrors {
        field
        code
        message
      }
    }
  }
`);
