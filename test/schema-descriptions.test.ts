import {
  type GraphQLArgument,
  type GraphQLField,
  type GraphQLInputField,
  type GraphQLSchema,
  buildSchema,
  isEnumType,
  isInputObjectType,
  isInterfaceType,
  isObjectType,
  isSpecifiedDirective,
  isSpecifiedScalarType,
} from 'graphql';
import { describe, expect, it } from 'vitest';

import { buildGatewaySchema } from '../src/server/schema.js';

// The schema is the contract frontend teams read in the explorer: every
// type, field, argument, input field and enum value says what it means.

function described(element: { description?: string | null }): boolean {
  return (element.description ?? '').trim() !== '';
}

/** Every element of the schema without a description, by coordinate (`Type.field(arg:)`, `Enum.VALUE`). */
function undescribed(schema: GraphQLSchema): string[] {
  const missing: string[] = [];
  const args = (coordinate: string, list: readonly GraphQLArgument[]): void => {
    for (const arg of list) if (!described(arg)) missing.push(`${coordinate}(${arg.name}:)`);
  };
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__') || isSpecifiedScalarType(type)) continue;
    if (!described(type)) missing.push(type.name);
    if (isObjectType(type) || isInterfaceType(type)) {
      for (const field of Object.values(type.getFields()) as GraphQLField<unknown, unknown>[]) {
        const coordinate = `${type.name}.${field.name}`;
        if (!described(field)) missing.push(coordinate);
        args(coordinate, field.args);
      }
    } else if (isInputObjectType(type)) {
      for (const field of Object.values(type.getFields()) as GraphQLInputField[]) {
        if (!described(field)) missing.push(`${type.name}.${field.name}`);
      }
    } else if (isEnumType(type)) {
      for (const value of type.getValues()) {
        if (!described(value)) missing.push(`${type.name}.${value.name}`);
      }
    }
  }
  for (const directive of schema.getDirectives()) {
    if (isSpecifiedDirective(directive)) continue;
    if (!described(directive)) missing.push(`@${directive.name}`);
    args(`@${directive.name}`, directive.args);
  }
  return missing.sort();
}

describe('schema descriptions', () => {
  const schema = buildGatewaySchema();

  it('describes every type, field, argument, input field and enum value', () => {
    const missing = undescribed(schema);
    expect(missing, `without a description: ${missing.join(', ')}`).toEqual([]);
  });

  it('finds undescribed elements of every kind', () => {
    const probe = buildSchema(`
      "Q." type Query { "F." f("A." a: Int, b: Int): E, g(i: I): Int }
      enum E { "V." V, W }
      "I." input I { "X." x: Int, y: Int }
    `);
    expect(undescribed(probe)).toEqual(['E', 'I.y', 'Query.f(b:)', 'Query.g', 'Query.g(i:)', 'E.W'].sort());
  });
});
