/**
 * The PostgreSQL notification channels coordinators use (pg-notify.ts),
 * apart so that naming one does not load the `pg` client.
 */

/** The channels braid notifies on; each is also a LISTEN identifier. */
export const CHANNELS = {
  /** A token was created, revoked or rotated. */
  tokens: 'braid_tokens',
  /** Events of a build were stored; the payload is the build's id. */
  buildEvents: 'braid_build_events',
  /** A build was submitted through a standby; the payload is its id. */
  submitted: 'braid_submitted',
} as const;

export type Channel = (typeof CHANNELS)[keyof typeof CHANNELS];
