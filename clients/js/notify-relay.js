// notify-relay browser (and Node) client as an ES module:
//
//   import { NotifyRelay } from "./notify-relay.js";
//
// The library itself is notify-relay.global.js, a classic script (so a page opened from
// file:// can load it with <script src>); importing it runs it once, and it sets
// globalThis.NotifyRelay, which this module exports. Keep the two files side by side.
import "./notify-relay.global.js";

/** The client class (types: notify-relay.d.ts). */
export const NotifyRelay = globalThis.NotifyRelay;
