// Text of messages as pure logic (tests/browser/test_message_logic.py runs it without a
// server): the links in a body, the line a notice shows, a search result's snippet and the
// conversation list's preview. Nothing here makes HTML: ui.js builds DOM nodes from the parts.

// a link starts with http:// or https:// and runs to a space or a character never in one
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?'"*_~]+$/;

/** `url` as a link we accept (http or https, parsable), its normalised href; else null. */
export function safeHref(url) {
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    if (!u.hostname) return null;
    return u.href;
  } catch {
    return null;
  }
}

/** Drop what ends a sentence rather than a link: "see https://x.org/a." and "(https://x.org)". */
function trimUrl(raw) {
  let url = raw;
  for (;;) {
    const before = url;
    url = url.replace(TRAILING, '');
    if (url.endsWith(')')) {
      const open = (url.match(/\(/g) || []).length;
      const close = (url.match(/\)/g) || []).length;
      if (close > open) url = url.slice(0, -1);
    }
    if (url === before) return url;
  }
}

/**
 * A body as parts: `{text}` for plain text and `{text, href}` for a link (http/https only).
 * Joined, the parts' `text` is the body, unchanged.
 */
export function linkParts(body) {
  const text = String(body ?? '');
  const parts = [];
  let at = 0;
  URL_RE.lastIndex = 0;
  for (let m = URL_RE.exec(text); m; m = URL_RE.exec(text)) {
    const url = trimUrl(m[0]);
    const href = safeHref(url);
    if (!href || url.length < 'http://x'.length) continue;
    if (m.index > at) parts.push({ text: text.slice(at, m.index) });
    parts.push({ text: url, href });
    at = m.index + url.length;
    URL_RE.lastIndex = at;
  }
  if (at < text.length || !parts.length) parts.push({ text: text.slice(at) });
  return parts;
}

/** The line a notice shows: "alice added bob", "bob left", "alice renamed the group to X". */
export function noticeText(msg) {
  const n = (msg && msg.notice) || {};
  const who = n.username || '';
  const by = n.by || msg.sender || 'someone';
  switch (n.event) {
    case 'created': return `${by} created the group`;
    case 'joined': return who && who !== by ? `${by} added ${who}` : `${who || by} joined`;
    case 'left': return `${who || by} left`;
    case 'removed': return who && by && who !== by ? `${by} removed ${who}` : `${who || by} left`;
    case 'renamed': return `${by} renamed the group to ${n.name ?? ''}`;
    default: return `${by} changed the conversation`;
  }
}

/** One line for the conversation list: the text, "message deleted" or the notice. */
export function previewText(msg, { isMe, isGroup } = {}) {
  if (!msg) return '';
  if (msg.kind === 'notice') return noticeText(msg);
  const mine = isMe ? isMe(msg.sender) : false;
  const who = mine ? 'You: ' : (isGroup ? `${msg.sender}: ` : '');
  if (msg.deleted) return `${who}message deleted`;
  const line = String(msg.body ?? '').replace(/\s+/g, ' ').trim();
  return `${who}${line}`;
}

/** A letter as search sees it: no case, no marks, đ as d (as the server folds words). */
function fold(ch) {
  return ch.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase().replace(/đ/g, 'd');
}

/** The words of a query, folded: runs of letters and digits. */
export function queryWords(q) {
  return (fold(String(q || '')).match(/[\p{L}\p{N}]+/gu) || []).slice(0, 10);
}

/**
 * A search result's snippet as parts `{text, hit}`: the words of the query marked (a word of 3
 * letters or more also marks the words it begins, as the search finds them), cut to about
 * `max` characters around the first one.
 */
export function snippetParts(body, q, max = 160) {
  const chars = [...String(body ?? '')];
  const words = queryWords(q);
  // folded text with, for each folded character, the index of its source character
  let folded = '';
  const src = [];
  chars.forEach((c, i) => {
    const f = fold(c);
    folded += f;
    for (let k = 0; k < f.length; k += 1) src.push(i);
  });
  const hit = new Array(chars.length).fill(false);
  const isWordChar = (s) => /[\p{L}\p{N}]/u.test(s || '');
  for (const w of words) {
    let from = 0;
    for (;;) {
      const i = folded.indexOf(w, from);
      if (i < 0) break;
      from = i + 1;
      if (isWordChar(folded[i - 1])) continue; // not at the start of a word
      const end = i + w.length;
      if (w.length < 3 && isWordChar(folded[end])) continue; // short words: whole words only
      let j = end;
      while (isWordChar(folded[j])) j += 1; // mark the whole word found
      for (let k = i; k < j; k += 1) hit[src[k]] = true;
    }
  }
  let start = 0;
  let stop = chars.length;
  if (chars.length > max) {
    const first = Math.max(0, hit.indexOf(true));
    start = Math.max(0, Math.min(first - Math.floor(max / 3), chars.length - max));
    stop = start + max;
  }
  const parts = [];
  if (start > 0) parts.push({ text: '…', hit: false });
  for (let i = start; i < stop; i += 1) {
    const last = parts[parts.length - 1];
    if (last && last.hit === hit[i] && !(i === start && start > 0)) last.text += chars[i];
    else parts.push({ text: chars[i], hit: hit[i] });
  }
  if (stop < chars.length) parts.push({ text: '…', hit: false });
  return parts.map((p) => ({ text: p.text.replace(/\s+/g, ' '), hit: p.hit }));
}
