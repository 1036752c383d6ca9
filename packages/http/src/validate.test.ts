import { describe, expect, it } from "vitest";
import { parseExactJson } from "./validate.ts";

describe("parseExactJson", () => {
  it.each([
    ['{"amount":1.0000000000000001}', "amount: 1.0000000000000001 is not an integer, and would be read as 1"],
    ['{"amount":1e-400}', "amount: 1e-400 is not an integer, and would be read as 0"],
    ['{"a":{"b":[2.0000000000000001]}}', "0: 2.0000000000000001 is not an integer, and would be read as 2"],
    ["5.0000000000000001", "body: 5.0000000000000001 is not an integer, and would be read as 5"],
  ])("refuses %s, a fraction that the double drops", (text, message) => {
    expect(() => parseExactJson(text)).toThrow(message);
  });

  it.each([
    ['{"amount":7}', { amount: 7 }],
    ['{"amount":7.0}', { amount: 7 }],
    ['{"amount":1e3}', { amount: 1000 }],
    ['{"amount":1.5E+1}', { amount: 15 }],
    ['{"amount":-0.00}', { amount: -0 }],
    // Not an integer either way: left to the schema, which says `amount` must be one.
    ['{"amount":1.5}', { amount: 1.5 }],
    ['{"amount":0.1}', { amount: 0.1 }],
  ])("reads %s as JSON.parse does", (text, value) => {
    expect(parseExactJson(text)).toEqual(value);
  });
});
