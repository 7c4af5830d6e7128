/**
 * An agent's name, as the coordinator lists it and a build's jobs name it:
 * the rule the agent's settings, `braid farm add` and the coordinator's
 * hello check share.
 */

/** Letters, digits, ".", "_" and "-", starting with a letter or digit; at most 63. */
export const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** `text` (a host name) with every character a name cannot hold made "-", cut to 63. */
export function agentNameFrom(text: string): string {
  return text.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 63);
}
