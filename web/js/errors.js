// Human-readable text for every error code the API and the gateway can send.

const TEXT = {
  // WebSocket `error` frames (API.md, "WebSocket")
  not_a_member: 'You are not a member of this conversation any more.',
  room_not_found: 'This conversation does not exist, or you are not in it.',
  user_not_found: 'There is no user with that name.',
  body_too_long: 'The message is too long: at most 4000 characters.',
  empty_body: 'The message is empty.',
  rate_limited: 'You are sending too fast. Wait a moment and try again.',
  invalid_frame: 'The server could not understand that request.',
  unavailable: 'The server could not store the message right now. It is retried automatically.',
  // REST errors
  username_taken: 'That username is taken. Pick another one.',
  invalid_username: 'Usernames are 3–32 characters: a–z, 0–9, _ . -',
  invalid_password: 'Passwords are 8–128 characters.',
  invalid_credentials: 'Wrong username or password.',
  invalid_token: 'Your session has ended. Please log in again.',
  session_expired: 'Your session has ended. Please log in again.',
  forbidden: 'You are not allowed to do that.',
  message_not_found: 'That message no longer exists.',
  invalid_request: 'That request is not valid.',
  network: 'Cannot reach the server. Check your connection and try again.',
};

// codes whose server message says more than our generic text (it names the problem)
const SPECIFIC = new Set(['invalid_request', 'invalid_password', 'invalid_username']);

function sentence(text) {
  const t = String(text).trim();
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?…]$/.test(t) ? '' : '.');
}

/** Text for a person, given a code and the server's own message (used as a fallback). */
export function errorText(code, serverMessage, extra = {}) {
  if (code === 'rate_limited' && extra.retryAfter) {
    return `Too many attempts. Try again in ${extra.retryAfter} s.`;
  }
  if (code === 'user_not_found' && extra.username) {
    return `There is no user named “${extra.username}”.`;
  }
  if (code === 'user_not_found' && extra.useServerMessage && serverMessage) {
    return sentence(serverMessage); // group creation: the server names the unknown users
  }
  if (code === 'forbidden' && extra.forbidden) return extra.forbidden; // what was refused
  if (SPECIFIC.has(code) && serverMessage) return sentence(serverMessage);
  if (TEXT[code]) return TEXT[code];
  if (serverMessage) return serverMessage;
  return `Something went wrong (${code || 'unknown error'}).`;
}

/** Close codes of the WebSocket, for the status line and the banner. */
export function closeText(code) {
  switch (code) {
    case 4001: return 'Your session is no longer valid.';
    case 4008: return 'The server did not get our login in time; reconnecting.';
    case 4029: return 'Too many requests; the server closed the connection. Reconnecting shortly.';
    case 1009: return 'A message was too large for the server; reconnecting.';
    case 1012: return 'The server is restarting; reconnecting.';
    default: return '';
  }
}
