import { describe, expect, it } from 'vitest';
import { COMMANDS, commandsFor } from '../../src/cli/main.js';

describe('the top-level commands braid builds for a run', () => {
  it('are keyed by the names they answer to', () => {
    for (const [name, make] of Object.entries(COMMANDS)) expect(make({}).name()).toBe(name);
  });

  it('are only the named one when a run names one, else all of them', () => {
    const all = Object.keys(COMMANDS);
    expect(commandsFor(['node', 'braid', 'manifest', 'create', '-t', 'r/a:1'])).toEqual([
      'manifest',
    ]);
    expect(commandsFor(['node', 'braid', 'build', '--help'])).toEqual(['build']);
    expect(commandsFor(['node', 'braid'])).toEqual(all);
    expect(commandsFor(['node', 'braid', '--help'])).toEqual(all);
    expect(commandsFor(['node', 'braid', 'help', 'build'])).toEqual(all);
    // A typo gets commander's suggestion, which needs every name.
    expect(commandsFor(['node', 'braid', 'bild'])).toEqual(all);
  });
});
