/* chinwag web chat widget: type or talk to a local chinwag server from any web page.
 *
 *   <script src="http://127.0.0.1:8765/chinwag-widget.js" defer></script>
 *
 * Plain JavaScript, no build step, no third-party code. The widget is a <chinwag-widget>
 * custom element whose parts live in a Shadow DOM, so the host page's CSS and the widget's
 * do not touch. It speaks chinwag's native WebSocket protocol (docs/protocol.md).
 * Embedding, attributes, events: docs/web.md.
 *
 * Safety rule of this file: text from the server, the person or storage is only ever put
 * in the page with textContent (replies' markdown is parsed here into DOM nodes built with
 * createElement and textContent); innerHTML holds the static template and nothing else.
 */
(() => {
  'use strict';

  if (!window.customElements || customElements.get('chinwag-widget')) return;

  const script =
    document.currentScript ||
    Array.from(document.querySelectorAll('script[src*="chinwag-widget"]')).pop() ||
    null;
  const scriptUrl = new URL(script && script.src ? script.src : location.href, location.href);
  const scriptData = script ? script.dataset : {};
  const asset = (name) => new URL(name, scriptUrl).href;

  const MIC_RATE = 16000; // the rate the widget declares in audio.start
  const MIC_FRAME_MS = 20;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const JITTER_BUFFER_S = 0.15; // reply audio is scheduled this far ahead at start or underrun
  const PLAYBACK_REPORT_MS = 250;
  const MAX_STORED_MESSAGES = 200;
  const STORAGE_PREFIX = 'chinwag-widget:v1:';
  const UNDO_MS = 10000; // "New conversation" can be undone this long
  const COUNT_FROM = 0.8; // the character counter shows from this share of the limit
  const SESSION_NOTE = 'New session: the assistant does not remember the messages above.';
  const STATUS_LABELS = { stopped: 'stopped', interrupted: 'interrupted', failed: 'failed', queued: 'waiting to send' };
  // Errors that turn a typed message down as it arrives, before any reply (and that nothing
  // else the widget sends can cause): its bubble is marked failed.
  const MESSAGE_ERRORS = { text_too_long: 'too long', frame_too_large: 'too long' };
  // The floating panel fills the screen on phones and short (zoomed) viewports: a modal dialog.
  const FULLSCREEN_QUERY = '(max-width: 520px), (max-height: 560px)';

  const ICONS = {
    chat: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>',
    close: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M6 6l12 12M18 6L6 18"/></svg>',
    fresh: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 5v14M5 12h14"/></svg>',
    mic: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3M8 21h8"/></svg>',
    stop: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><rect x="6" y="6" width="12" height="12" rx="2"/></svg>',
    send: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 12l16-8-6 16-2-7-8-1z"/></svg>',
    down: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 5v14M6 13l6 6 6-6"/></svg>',
  };

  // Static markup only (no data): every dynamic text goes in with textContent.
  const TEMPLATE = `
<link rel="stylesheet" href="${asset('chinwag-widget.css')}">
<div class="root" part="root">
  <button class="launcher" type="button" aria-expanded="false" aria-controls="panel"
          aria-label="Open the chat">${ICONS.chat}<span class="unread" aria-hidden="true" hidden></span></button>
  <section class="panel" id="panel">
    <header class="head">
      <div class="heading">
        <h2 class="title"></h2>
        <p class="status" role="status" aria-live="polite" aria-atomic="true">
          <span class="dot" aria-hidden="true"></span><span class="status-text">Connecting…</span>
        </p>
      </div>
      <button class="icon fresh" type="button" aria-label="Start a new conversation"
              title="New conversation">${ICONS.fresh}</button>
      <button class="icon close" type="button" aria-label="Close the chat"
              title="Close">${ICONS.close}</button>
    </header>
    <div class="view">
      <div class="log" role="log" aria-label="Conversation" tabindex="0"><ol class="items"></ol></div>
      <button class="jump" type="button" hidden>${ICONS.down}<span>Jump to latest</span></button>
    </div>
    <div class="notice" hidden>
      <p class="notice-text" role="alert"></p>
      <button class="notice-action" type="button" hidden></button>
      <button class="dismiss" type="button" aria-label="Dismiss this message"
              title="Dismiss">${ICONS.close}</button>
    </div>
    <div class="voice" hidden>
      <div class="meter" aria-hidden="true"><span class="level"></span></div>
      <p class="live"></p>
    </div>
    <p class="announce" aria-live="polite" aria-atomic="true"></p>
    <form class="composer">
      <textarea class="input" rows="1" aria-label="Message" placeholder="Type a message…"
                autocomplete="off" enterkeyhint="send"></textarea>
      <button class="round mic" type="button" aria-pressed="false"
              aria-label="Start talking">${ICONS.mic}</button>
      <button class="round send" type="submit" aria-label="Send message">${ICONS.send}</button>
      <button class="round stop" type="button" aria-label="Stop the reply" hidden>${ICONS.stop}</button>
    </form>
    <div class="tools">
      <label class="mode-label">Microphone
        <select class="mode">
          <option value="vad">hands-free</option>
          <option value="push_to_talk">push to talk</option>
        </select>
      </label>
      <span class="count" id="count" hidden></span>
      <span class="hint" aria-hidden="true">Enter sends · Esc stops</span>
    </div>
  </section>
</div>`;

  const truthy = (value, fallback) =>
    value == null || value === '' ? fallback : !/^(off|false|no|0)$/i.test(String(value).trim());

  function defaultServer() {
    const url = new URL('/', scriptUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  function micError(err) {
    const name = (err && err.name) || '';
    if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
      return ['denied', 'Microphone access was refused. To talk, allow the microphone for this site in the browser. You can still type.'];
    }
    if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
      return ['missing', 'No microphone was found. You can still type.'];
    }
    if (name === 'NotReadableError' || name === 'TrackStartError') {
      return ['busy', 'The microphone is in use by another program. You can still type.'];
    }
    if (name === 'NotSupportedError') {
      return ['unsupported', 'Voice needs a secure page (https:// or localhost) in a browser with microphone support. You can still type.'];
    }
    if (name === 'WorkletError') {
      return ['error', 'The voice module could not be loaded. You can still type.'];
    }
    return ['error', 'The microphone could not be started. You can still type.'];
  }

  // --- markdown: a safe subset, built as DOM nodes -----------------------------------------
  // Paragraphs, headings (as bold lines), lists, quotes, code fences (with a copy button),
  // `code`, **bold**, *italic*, links. No HTML: every piece of text goes in as a text node,
  // and links are made only for http(s) and mailto addresses, opened with rel=noopener.
  const SAFE_LINK = /^(?:https?:\/\/|mailto:)[^\s]+$/i;

  function node(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text != null) e.textContent = text;
    return e;
  }

  function link(parent, url, label, depth) {
    const a = node('a');
    a.href = url; // SAFE_LINK: the scheme is http, https or mailto, nothing else
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    inline(a, label, depth + 1, true);
    parent.appendChild(a);
  }

  /** Inline markup of `text` into `parent`: code spans, links, bold, italic; the rest text. */
  function inline(parent, text, depth = 0, inLink = false) {
    let buf = '';
    const flush = () => {
      if (buf) parent.appendChild(document.createTextNode(buf));
      buf = '';
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === '`') {
        let n = 1;
        while (text[i + n] === '`') n++;
        const ticks = text.slice(i, i + n);
        const end = text.indexOf(ticks, i + n);
        if (end > i + n) {
          flush();
          parent.appendChild(node('code', '', text.slice(i + n, end)));
          i = end + n;
        } else {
          buf += ticks;
          i += n;
        }
        continue;
      }
      if (depth < 3 && !inLink) {
        if (c === '[') {
          const m = /^\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/.exec(text.slice(i, i + 2100));
          if (m && SAFE_LINK.test(m[2])) {
            flush();
            link(parent, m[2], m[1], depth);
            i += m[0].length;
            continue;
          }
        }
        if ((c === 'h' || c === 'H') && !/\w/.test(text[i - 1] || '')) {
          const m = /^https?:\/\/[^\s<>"'`]+/i.exec(text.slice(i, i + 2100));
          if (m) {
            const url = m[0].replace(/[.,;:!?)\]*_]+$/, '');
            flush();
            link(parent, url, url, depth);
            i += url.length;
            continue;
          }
        }
      }
      if ((c === '*' || c === '_') && depth < 3) {
        const double = text[i + 1] === c;
        const mark = double ? c + c : c;
        const from = i + mark.length;
        const wordBefore = /\w/.test(text[i - 1] || '');
        if (!(c === '_' && wordBefore) && text[from] && !/\s/.test(text[from])) {
          let end = text.indexOf(mark, from + 1);
          while (
            end > 0 &&
            (/\s/.test(text[end - 1]) ||
              (!double && text[end + 1] === c) ||
              (c === '_' && /\w/.test(text[end + mark.length] || '')))
          ) {
            end = text.indexOf(mark, end + (double ? 1 : 2));
          }
          if (end > from - 1 && end >= from) {
            flush();
            const e = node(double ? 'strong' : 'em');
            inline(e, text.slice(from, end), depth + 1, inLink);
            parent.appendChild(e);
            i = end + mark.length;
            continue;
          }
        }
        buf += mark;
        i += mark.length;
        continue;
      }
      buf += c;
      i += 1;
    }
    flush();
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  const ITEM = /^ {0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const QUOTE = /^ {0,3}>\s?(.*)$/;
  const HEADING = /^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;

  /** The whole bubble from `text`, again each time (cheap: replies are short). */
  function markdown(target, text) {
    const out = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, '\n').split('\n');
    let para = [];
    const endPara = () => {
      if (!para.length) return;
      const p = node('p');
      inline(p, para.join('\n'));
      out.appendChild(p);
      para = [];
    };
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        endPara();
        const close = new RegExp('^ {0,3}' + fence[1][0] + '{' + fence[1].length + ',}\\s*$');
        const code = [];
        i += 1;
        while (i < lines.length && !close.test(lines[i])) code.push(lines[i++]);
        i += 1; // the closing fence (or the end of a reply still streaming)
        const box = node('div', 'code');
        const head = node('div', 'code-head');
        head.appendChild(node('span', 'lang', fence[2] || 'code'));
        const copy = node('button', 'copy', 'Copy');
        copy.type = 'button';
        copy.setAttribute('aria-label', 'Copy the code');
        head.appendChild(copy);
        const pre = node('pre');
        pre.appendChild(node('code', '', code.join('\n')));
        box.append(head, pre);
        out.appendChild(box);
        continue;
      }
      if (!line.trim()) {
        endPara();
        i += 1;
        continue;
      }
      if (RULE.test(line) && !para.length) {
        out.appendChild(node('hr'));
        i += 1;
        continue;
      }
      const heading = HEADING.exec(line);
      if (heading) {
        endPara();
        const p = node('p', 'heading');
        const strong = node('strong');
        inline(strong, heading[1]);
        p.appendChild(strong);
        out.appendChild(p);
        i += 1;
        continue;
      }
      const item = ITEM.exec(line);
      if (item) {
        endPara();
        const ordered = /\d/.test(item[1]);
        const list = node(ordered ? 'ol' : 'ul');
        if (ordered && parseInt(item[1], 10) !== 1) list.start = parseInt(item[1], 10);
        let current = null;
        while (i < lines.length) {
          const m = ITEM.exec(lines[i]);
          if (m && /\d/.test(m[1]) === ordered) {
            current = [m[2]];
            list.appendChild(node('li'))._lines = current;
          } else if (current && lines[i].trim() && /^\s/.test(lines[i]) && !FENCE.test(lines[i])) {
            current.push(lines[i].trim()); // a continuation line
          } else break;
          i += 1;
        }
        for (const li of list.children) inline(li, li._lines.join('\n'));
        out.appendChild(list);
        continue;
      }
      if (QUOTE.test(line)) {
        endPara();
        const quote = node('blockquote');
        const body = [];
        while (i < lines.length && QUOTE.test(lines[i])) body.push(QUOTE.exec(lines[i++])[1]);
        const p = node('p');
        inline(p, body.join('\n'));
        quote.appendChild(p);
        out.appendChild(quote);
        continue;
      }
      para.push(line);
      i += 1;
    }
    endPara();
    target.replaceChildren(out);
  }

  /** Reply audio: PCM16 frames scheduled through a small jitter buffer, reported as played. */
  class Player {
    constructor(widget) {
      this.widget = widget;
      this.ctx = null;
      this.stream = null;
      this.frames = 0;
      this.timer = null;
    }

    get playing() {
      return !!(this.stream && this.stream.sources.size);
    }

    begin(streamId, rate) {
      this.clear();
      this.stream = { id: streamId, rate, segments: [], next: 0, ms: 0, sources: new Set(), done: false };
    }

    push(data) {
      const s = this.stream;
      const ctx = this.ctx;
      if (!s || !ctx || data.byteLength < 2) return;
      const pcm = new Int16Array(data, 0, data.byteLength >> 1);
      const samples = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      const buffer = ctx.createBuffer(1, samples.length, s.rate);
      buffer.copyToChannel(samples, 0);
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      const now = ctx.currentTime;
      if (s.next < now + 0.01) s.next = now + JITTER_BUFFER_S; // start, or an underrun
      source.start(s.next);
      s.segments.push({ at: s.next, duration: buffer.duration, ms: s.ms });
      s.next += buffer.duration;
      s.ms += buffer.duration * 1000;
      s.sources.add(source);
      source.onended = () => {
        s.sources.delete(source);
        if (s === this.stream && s.done && !s.sources.size) this.ended();
      };
      this.frames += 1;
      this.widget.dataset.audioFrames = String(this.frames);
      this.widget.dataset.audioMs = String(Math.round(s.ms));
      if (!this.timer) {
        this.timer = setInterval(() => this.report(), PLAYBACK_REPORT_MS);
        this.widget.playbackChanged(true);
      }
    }

    playedMs() {
      const s = this.stream;
      if (!s || !this.ctx) return 0;
      const now = this.ctx.currentTime;
      let played = 0;
      for (const seg of s.segments) {
        if (now < seg.at) break;
        played = seg.ms + Math.min(now - seg.at, seg.duration) * 1000;
      }
      return played;
    }

    report() {
      const s = this.stream;
      if (!s || !s.segments.length) return;
      const played = Math.round(this.playedMs());
      this.widget.dataset.playedMs = String(played);
      this.widget.sendEvent({ type: 'playback', stream_id: s.id, played_ms: played });
    }

    finish(streamId) {
      const s = this.stream;
      if (!s || s.id !== streamId) return;
      s.done = true;
      if (!s.sources.size) this.ended();
    }

    ended() {
      this.report();
      this.stopTimer();
      this.stream = null;
      this.widget.playbackChanged(false);
    }

    /** Drop everything buffered at once (barge-in, stop, a new message). */
    clear(report = false) {
      const s = this.stream;
      if (!s) return;
      if (report) this.report();
      this.stream = null;
      for (const source of s.sources) {
        try {
          source.onended = null;
          source.stop();
        } catch (_) {
          /* already stopped */
        }
      }
      s.sources.clear();
      this.stopTimer();
      this.widget.playbackChanged(false);
    }

    stopTimer() {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
    }
  }

  let workletSource = null; // for cross-origin embeds, see mic-worklet.js

  async function loadWorklet(ctx) {
    const url = asset('mic-worklet.js');
    try {
      await ctx.audioWorklet.addModule(url);
      return;
    } catch (_) {
      // A worklet module from another origin needs CORS: load it as a classic script instead.
    }
    if (!workletSource) {
      await new Promise((resolve, reject) => {
        const tag = document.createElement('script');
        tag.src = url;
        tag.onload = resolve;
        tag.onerror = reject;
        document.head.appendChild(tag);
      });
      workletSource = window.__chinwagMicWorkletSource;
    }
    if (!workletSource) throw new Error('no worklet source');
    const blobUrl = URL.createObjectURL(new Blob([workletSource], { type: 'text/javascript' }));
    try {
      await ctx.audioWorklet.addModule(blobUrl);
    } finally {
      URL.revokeObjectURL(blobUrl);
    }
  }

  class ChinwagWidget extends HTMLElement {
    constructor() {
      super();
      this._built = false;
      this._running = false;
      this._ws = null;
      this._live = false; // a session is open on the current socket
      this._backoff = BACKOFF_MIN_MS;
      this._retryTimer = null;
      this._outbox = [];
      this._messages = [];
      this._replies = new Map(); // reply_id -> message
      this._utterances = new Map(); // utterance_id -> message
      this._activeReply = null;
      this._needsNote = false;
      this._noteAt = 0; // where the "New session" note goes: after the last session's messages
      this._inflight = []; // sent user messages with no reply.started yet
      this._limits = null; // {max_text_chars, max_message_bytes} from GET /widget/check
      this._unread = 0;
      this._undo = null; // a cleared conversation that can still come back
      this._pinned = true; // the view follows the latest message
      this._dirty = new Set(); // replies whose text changed since their last render
      this._frame = 0;
      this._seq = 0;
      this._generation = {};
      this._saveTimer = null;
      this._ctx = null;
      this._mic = { state: 'off', stream: null, source: null, node: null, sink: null, started: false, frames: 0, peak: 0, stopWanted: false };
      this._pageGone = false; // between pagehide and pageshow: the page is not on screen
      this._player = new Player(this);
    }

    // --- configuration ----------------------------------------------------------------

    _opt(name) {
      const own = this.getAttribute(name);
      if (own !== null) return own;
      const key = name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
      return scriptData[key] !== undefined ? scriptData[key] : null;
    }

    _readConfig() {
      // The floating widget the script adds by itself takes the script tag's layout; a
      // <chinwag-widget> the page placed itself is inline unless it says otherwise.
      const auto = this.hasAttribute('data-auto');
      const chosen = this.getAttribute('layout') || (auto ? scriptData.layout : null);
      const layout = (chosen || (auto ? 'floating' : 'inline')).toLowerCase();
      this.config = {
        server: this._opt('server') || defaultServer(),
        persona: this._opt('persona') || '',
        voice: truthy(this._opt('voice'), true),
        token: this._opt('token') || '',
        layout: ['floating', 'inline', 'fullscreen'].includes(layout) ? layout : 'floating',
        open: truthy(this._opt('open'), false),
        title: this._opt('title') || 'chinwag',
        theme: (this._opt('theme') || 'auto').toLowerCase(),
        micMode: /^(push|ptt)/i.test(this._opt('mic-mode') || '') ? 'push_to_talk' : 'vad',
        autofocus: truthy(this._opt('autofocus'), false),
      };
    }

    _url() {
      const url = new URL(this.config.server, location.href);
      if (url.protocol === 'http:') url.protocol = 'ws:';
      if (url.protocol === 'https:') url.protocol = 'wss:';
      if (this.config.token) url.searchParams.set('token', this.config.token);
      return url.href;
    }

    _storageKey() {
      const url = new URL(this.config.server, location.href);
      url.search = '';
      return STORAGE_PREFIX + url.href + '#' + this.config.persona;
    }

    // --- lifecycle ----------------------------------------------------------------------

    connectedCallback() {
      if (!this._built) this._build();
      if (!this._running) {
        this._running = true;
        this._connect();
      }
    }

    disconnectedCallback() {
      // Moving the element fires disconnected then connected: only a real removal stops it.
      queueMicrotask(() => {
        if (!this.isConnected) this._shutdown();
      });
    }

    _shutdown() {
      this._running = false;
      clearTimeout(this._retryTimer);
      this._micStop(false);
      this._player.clear();
      const ws = this._ws;
      this._ws = null;
      this._live = false;
      if (ws) ws.close(1000);
      this._save();
    }

    _build() {
      this._built = true;
      this._readConfig();
      const root = this.attachShadow({ mode: 'open' });
      root.innerHTML = TEMPLATE;
      const $ = (sel) => root.querySelector(sel);
      this._el = {
        root: $('.root'), launcher: $('.launcher'), panel: $('.panel'), title: $('.title'),
        status: $('.status'), statusText: $('.status-text'), fresh: $('.fresh'), close: $('.close'),
        view: $('.view'), log: $('.log'), items: $('.items'), jump: $('.jump'), notice: $('.notice'),
        noticeText: $('.notice-text'), noticeAction: $('.notice-action'), dismiss: $('.dismiss'),
        voice: $('.voice'), level: $('.level'), live: $('.live'), announce: $('.announce'),
        form: $('.composer'), input: $('.input'), mic: $('.mic'), stop: $('.stop'), send: $('.send'),
        tools: $('.tools'), mode: $('.mode'), count: $('.count'), unread: $('.unread'),
      };
      const el = this._el;
      this.dataset.layout = this.config.layout;
      this.dataset.theme = ['light', 'dark'].includes(this.config.theme) ? this.config.theme : 'auto';
      this.dataset.state = 'connecting';
      this.dataset.mic = 'off';
      this.dataset.playing = 'false';
      this.dataset.audioFrames = '0';
      this.dataset.busy = 'false';
      this.dataset.voice = this.config.voice ? 'on' : 'off';
      el.title.textContent = this.config.title;
      el.panel.setAttribute('aria-label', 'Chat with ' + this.config.title);
      if (this.config.layout === 'floating') el.panel.setAttribute('role', 'dialog');
      el.input.setAttribute('aria-describedby', 'count');
      el.mode.value = this.config.micMode;
      if (!this.config.voice) {
        el.mic.hidden = true;
        el.tools.querySelector('.mode-label').hidden = true;
      }
      // Hidden until the stylesheet is in, so the page never shows it unstyled (and a hidden
      // text box cannot take the focus: autofocus waits for it too).
      const styled = () => {
        el.root.classList.add('styled');
        this._scrollToEnd();
        if (this.config.autofocus && this._open) el.input.focus();
      };
      root.querySelector('link').addEventListener('load', styled);
      root.querySelector('link').addEventListener('error', styled);

      this._restore();
      this._setOpen(this._storedOpen !== null ? this._storedOpen : this.config.open);

      el.launcher.addEventListener('click', () => this._setOpen(!this._open, true));
      el.close.addEventListener('click', () => this._setOpen(false, true));
      el.fresh.addEventListener('click', () => this._freshWithUndo());
      el.dismiss.addEventListener('click', () => {
        this._setNotice('');
        el.input.focus();
      });
      el.noticeAction.addEventListener('click', () => {
        const run = this._noticeRun;
        this._setNotice('');
        if (run) run();
      });
      el.jump.addEventListener('click', () => {
        this._pinned = true;
        this._scrollToEnd();
        el.log.focus({ preventScroll: true });
      });
      const onScroll = () => this._onScroll();
      el.log.addEventListener('scroll', onScroll, { passive: true });
      el.panel.addEventListener('scroll', onScroll, { passive: true });
      if (window.ResizeObserver) {
        new ResizeObserver(() => {
          if (this._pinned) this._scrollToEnd();
          else this._onScroll();
        }).observe(el.log);
      }
      // Buttons inside the messages: copy a code block, retry or edit a message not sent.
      el.items.addEventListener('click', (event) => this._onItemClick(event));
      // Fullscreen (phones, short viewports): the panel is a modal dialog that keeps the focus.
      this._fullscreenQuery = window.matchMedia ? window.matchMedia(FULLSCREEN_QUERY) : null;
      if (this._fullscreenQuery) {
        const change = () => this._updateModal();
        if (this._fullscreenQuery.addEventListener) this._fullscreenQuery.addEventListener('change', change);
        else if (this._fullscreenQuery.addListener) this._fullscreenQuery.addListener(change);
      }
      this._updateModal();
      el.panel.addEventListener('keydown', (event) => {
        if (event.key === 'Tab') this._trapFocus(event);
      });
      document.addEventListener('focusin', (event) => {
        // Focus that leaves a modal panel (a click or script on the page) comes back to it.
        if (this._modal && this._open && event.target !== this && !this.contains(event.target)) {
          el.input.focus();
        }
      });
      el.form.addEventListener('submit', (event) => {
        event.preventDefault();
        this._submit();
      });
      el.input.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this._submit();
        }
      });
      el.input.addEventListener('input', () => {
        this._autosize();
        this._updateCount();
        this._updateBusy();
      });
      el.panel.addEventListener('keydown', (event) => {
        if (event.key === 'Escape') {
          event.preventDefault();
          this._escape();
        }
      });
      el.stop.addEventListener('click', () => {
        this.stop();
        el.input.focus();
      });
      el.mode.addEventListener('change', () => {
        this._micStop(true);
        this._updateMicButton();
      });
      this._wireMic();
      this._updateMicButton();
      // Back online: do not wait for the backoff.
      window.addEventListener('online', () => {
        if (this._running && this._retryTimer) this._connect();
      });
      // Leaving the page (navigating away, closing the tab, going into the back-forward
      // cache) turns the microphone off and stops the assistant speaking, as closing the
      // panel does. A tab merely in the background (visibilitychange) keeps listening: the
      // browser marks it as recording, and talking hands-free while reading another tab is
      // what hands-free is for. Coming back (pageshow) leaves the microphone off.
      window.addEventListener('pagehide', () => {
        this._pageGone = true;
        this._quiet();
      });
      window.addEventListener('pageshow', () => {
        this._pageGone = false;
      });
    }

    // --- public API (docs/web.md) --------------------------------------------------------

    /** Send a message as if typed. Returns false for an empty one. */
    send(text) {
      const clean = String(text == null ? '' : text).trim();
      if (!clean) return false;
      this._commitFresh();
      this._player.clear(true);
      const message = this._add({ role: 'user', text: clean, status: '' });
      this._pinned = true;
      this._scrollToEnd();
      this._deliver(message);
      this._emit('message', { text: clean, source: 'keyboard' });
      return true;
    }

    _deliver(message) {
      const event = { type: 'user.message', text: message.text, id: 'm' + ++this._seq };
      message.sendId = event.id;
      message.status = this._live ? '' : 'queued';
      message.reason = '';
      if (this._live) {
        this.sendEvent(event);
        this._inflight.push(message);
      } else {
        this._outbox.push({ event, message });
      }
      this._render(message);
    }

    /** Stop the reply in progress, and any reply audio. */
    stop() {
      const hadAudio = !!this._player.stream;
      this._player.clear(true);
      if (this._activeReply && this._live) this.sendEvent({ type: 'cancel' });
      return hadAudio || !!this._activeReply;
    }

    /** Override generation settings (session.update), kept across reconnects. */
    updateSession(generation) {
      this._generation = Object.assign({}, this._generation, generation || {});
      if (this._live) this.sendEvent({ type: 'session.update', generation: this._generation });
    }

    /** Forget the conversation here and on the server (at once: no undo from a script). */
    newConversation() {
      if (this._undo) clearTimeout(this._undo.timer);
      this._undo = null;
      this.stop();
      this._clearView();
      this._setNotice('');
      this._save();
      this._startSession();
      this._updateBusy();
      this._el.input.focus();
    }

    /** The conversation as shown: [{role: "user"|"assistant"|"note", text, status}]. */
    get messages() {
      return this._messages.map(({ role, text, status }) => ({ role, text, status }));
    }

    sendEvent(event) {
      const ws = this._ws;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
    }

    // --- new conversation, with undo -----------------------------------------------------

    _clearView() {
      this._messages = [];
      this._replies.clear();
      this._utterances.clear();
      this._inflight = [];
      this._outbox = [];
      this._activeReply = null;
      this._needsNote = false;
      this._el.items.textContent = '';
      this._pinned = true;
      this._updateJump();
    }

    _startSession() {
      if (!this._live) return; // the next connection is a new session anyway
      const start = { type: 'session.start' };
      if (this.config.persona) start.persona = this.config.persona;
      if (Object.keys(this._generation).length) start.generation = this._generation;
      this.sendEvent(start);
    }

    /** The "+" button: clear the conversation now, but start the new session on the server
     * only once the undo has expired (or the person goes on), so that undo is real. */
    _freshWithUndo() {
      this._commitFresh();
      if (!this._messages.some((m) => m.role !== 'note' && !m.pending)) {
        this.newConversation();
        return;
      }
      this.stop();
      for (const m of this._messages) {
        if (m.status === 'streaming') m.status = 'stopped';
        if (m.status === 'listening') m.status = '';
      }
      const messages = this._messages.filter((m) => !m.pending);
      this._clearView();
      this._undo = { messages, timer: setTimeout(() => this._commitFresh(), UNDO_MS) };
      this._save();
      this._updateBusy();
      this._setNotice('Conversation cleared.', { label: 'Undo', run: () => this._undoFresh() }, 'info');
      this._el.noticeAction.focus();
    }

    _undoFresh() {
      const undo = this._undo;
      if (!undo) return;
      clearTimeout(undo.timer);
      this._undo = null;
      this._messages = undo.messages.concat(this._messages);
      this._renderAll(this._messages);
      this._save();
      this._pinned = true;
      this._scrollToEnd();
      this._announce('Conversation restored.');
      this._el.input.focus();
    }

    _commitFresh() {
      const undo = this._undo;
      if (!undo) return;
      clearTimeout(undo.timer);
      this._undo = null;
      if (this._noticeRun && this._el.noticeAction.textContent === 'Undo') this._setNotice('');
      this._startSession();
    }

    // --- connection ---------------------------------------------------------------------

    _httpUrl(path) {
      const url = new URL(path, new URL(this.config.server, location.href));
      if (url.protocol === 'ws:') url.protocol = 'http:';
      if (url.protocol === 'wss:') url.protocol = 'https:';
      if (this.config.token) url.searchParams.set('token', this.config.token);
      return url.href;
    }

    /** GET /widget/check: would this page be let in (Origin, token), and the text limits. A
     * refused WebSocket handshake looks like any network error to a page; this says why. */
    async _check() {
      const abort = window.AbortController ? new AbortController() : null;
      const timer = setTimeout(() => abort && abort.abort(), 5000); // a server that hangs
      try {
        const response = await fetch(this._httpUrl('widget/check'), {
          cache: 'no-store',
          credentials: 'omit',
          signal: abort ? abort.signal : undefined,
        });
        const body = await response.json().catch(() => null);
        return { status: response.status, body: body || {} };
      } catch (_) {
        return null; // the server is down, or the page's CSP forbids it
      } finally {
        clearTimeout(timer);
      }
    }

    _connect() {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      if (!this._running) return;
      let ws;
      try {
        ws = new WebSocket(this._url());
      } catch (err) {
        this._setStatus('failed', 'Cannot connect: the server address is not valid.');
        return;
      }
      ws.binaryType = 'arraybuffer';
      this._ws = ws;
      this._live = false;
      this._sessionSeen = false;
      let opened = false;
      ws.onopen = () => {
        if (this._ws !== ws) return;
        opened = true;
        this._setStatus(this.dataset.state, 'Waiting for the assistant…');
        if (this.config.persona) this.sendEvent({ type: 'session.start', persona: this.config.persona });
        if (Object.keys(this._generation).length) {
          this.sendEvent({ type: 'session.update', generation: this._generation });
        }
      };
      ws.onmessage = (event) => {
        if (this._ws !== ws) return;
        if (typeof event.data === 'string') {
          let data;
          try {
            data = JSON.parse(event.data);
          } catch (_) {
            return;
          }
          if (data && typeof data.type === 'string') this._onEvent(data);
        } else {
          this._player.push(event.data);
        }
      };
      ws.onclose = () => {
        if (this._ws !== ws) return;
        this._ws = null;
        if (opened) {
          this._lost();
          return;
        }
        // The handshake failed: refused (403 origin, 401 token) or the server is not there.
        this._check().then((answer) => {
          if (this._ws || !this._running) return;
          const error = answer && answer.body && answer.body.error;
          if (answer && (answer.status === 401 || answer.status === 403) && error && error.code) {
            this._refused(String(error.code), String(error.message || ''));
          } else {
            this._lost();
          }
        });
      };
    }

    /** Cleanup after a connection ended; then retry, unless told not to. */
    _lost(retry = true) {
      this._live = false;
      this._micStop(false);
      this._player.clear();
      // A reply cut off by the lost connection stays as far as it came.
      for (const message of this._replies.values()) {
        message.status = 'interrupted';
        this._render(message);
      }
      this._replies.clear();
      for (const message of this._utterances.values()) {
        if (message.pending) this._remove(message);
      }
      this._utterances.clear();
      // Sent, but no reply began: it may never have arrived. Offer to send it again.
      for (const message of this._inflight) this._fail(message, 'the connection was lost');
      this._inflight = [];
      this._activeReply = null;
      this._updateBusy();
      if (!this._needsNote && this._messages.some((m) => m.role !== 'note')) {
        this._needsNote = true;
        this._noteAt = this._messages.length;
      }
      this._save();
      if (!this._running || !retry) return;
      const delay = Math.round(this._backoff * (0.8 + Math.random() * 0.4));
      this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
      // One steady text for the whole outage, so screen readers announce it once.
      this._setStatus(
        'reconnecting',
        this._everConnected ? 'Connection lost. Reconnecting…' : 'Cannot reach the assistant. Reconnecting…',
      );
      this._retryTimer = setTimeout(() => this._connect(), delay);
    }

    /** The server refused this page: say what is wrong, and stop knocking. */
    _refused(code, serverMessage) {
      this._lost(false);
      let status = 'Access refused';
      let text = 'The assistant refused the connection: ' + serverMessage;
      if (code === 'origin_not_allowed') {
        status = 'Not available on this site';
        text =
          'The assistant is not available on this site: its server does not allow pages from ' +
          location.origin +
          '. The site owner can add this address to allowed_origins in the chinwag settings.';
      } else if (code === 'unauthorized') {
        text = "The assistant refused the connection: this page's access token (data-token) is missing or wrong.";
      }
      this._setStatus('failed', status);
      this._setNotice(text, {
        label: 'Try again',
        run: () => {
          this._setStatus('connecting', 'Connecting…');
          this._connect();
        },
      });
      this._emit('error', { code, message: text });
    }

    _setStatus(state, text) {
      const changed = this.dataset.state !== state || this._el.statusText.textContent !== text;
      this.dataset.state = state;
      this._el.statusText.textContent = text;
      if (changed) this._emit('status', { state, text });
      this._updateMicButton();
    }

    _onSessionStarted() {
      const first = !this._sessionSeen;
      this._sessionSeen = true;
      this._live = true;
      this._everConnected = true;
      this._backoff = BACKOFF_MIN_MS;
      this._setStatus('connected', 'Connected');
      if (this.dataset.state === 'connected' && this._el.noticeAction.textContent === 'Try again') {
        this._setNotice('');
      }
      if (first && this._needsNote) {
        // After the messages of the session that ended (not below ones typed since), and
        // only if something was said since the last such note.
        this._needsNote = false;
        const at = Math.min(this._noteAt, this._messages.length);
        const last = this._messages.slice(0, at).filter((m) => !m.pending).pop();
        if (last && !(last.role === 'note' && last.text === SESSION_NOTE)) {
          this._add({ role: 'note', text: SESSION_NOTE }, at);
        }
      }
      const queued = this._outbox;
      this._outbox = [];
      for (const { event, message } of queued) {
        message.status = '';
        this._render(message);
        this.sendEvent(event);
        this._inflight.push(message);
      }
      this._save();
      if (!this._limits && !this._limitsAsked) {
        this._limitsAsked = true;
        this._check().then((answer) => {
          const limits = answer && answer.status === 200 && answer.body.limits;
          if (limits && limits.max_text_chars > 0) {
            this._limits = limits;
            this._updateCount();
          }
        });
      }
    }

    _onEvent(e) {
      switch (e.type) {
        case 'session.started':
          this._onSessionStarted();
          break;
        case 'reply.started': {
          const message = this._add({ role: 'assistant', text: '', status: 'streaming' });
          this._replies.set(e.reply_id, message);
          message.replyId = e.reply_id;
          message.messageId = e.message_id || null;
          this._inflight = this._inflight.filter((m) => m.sendId !== e.message_id);
          this._activeReply = e.reply_id;
          this._updateBusy();
          break;
        }
        case 'reply.delta': {
          const message = this._replies.get(e.reply_id);
          if (message && typeof e.text === 'string') {
            message.text += e.text;
            this._renderSoon(message);
            this._saveSoon();
          }
          break;
        }
        case 'reply.done': {
          const message = this._replies.get(e.reply_id);
          this._replies.delete(e.reply_id);
          if (this._activeReply === e.reply_id) this._activeReply = null;
          if (message) {
            if (typeof e.text === 'string') message.text = e.text;
            message.status = e.status === 'completed' ? '' : e.status === 'cancelled' ? 'stopped' : 'failed';
            this._dirty.delete(message);
            if (!message.text.trim() && e.status !== 'completed') this._remove(message);
            else this._render(message);
            if (!this._open && message.text.trim()) this._setUnread(this._unread + 1);
          }
          this._updateBusy();
          this._save();
          this._emit('reply', { text: (e.text || '').trim(), status: e.status, replyId: e.reply_id });
          break;
        }
        case 'reply.truncated': {
          const message = this._messages.find((m) => m.replyId === e.reply_id);
          if (message) {
            message.status = 'interrupted';
            this._render(message);
            this._save();
          }
          break;
        }
        case 'speech.started':
          this._utterance(e.utterance_id, '…');
          this._setLive('Listening…');
          break;
        case 'speech.stopped':
          this._setLive('Thinking…');
          this._announce('Thinking…');
          break;
        case 'transcript.partial':
          // Shown as it comes, in the bubble (aria-busy) and the voice bar (not a live
          // region): a screen reader hears the final transcript, not two partials a second.
          if (typeof e.text === 'string' && e.text.trim()) {
            this._utterance(e.utterance_id, e.text.trim());
            this._setLive(e.text.trim());
          }
          break;
        case 'transcript': {
          const text = String(e.text || '').trim();
          if (e.joins) {
            // The person had only paused: this transcript replaces the earlier one, and the
            // reply that had begun to it (never heard, dropped from the history) goes too.
            for (const m of this._messages.slice()) {
              if (m.utteranceId === e.joins || (m.role === 'assistant' && m.messageId === e.joins)) {
                this._remove(m);
              }
            }
          }
          const message = this._utterance(e.utterance_id, text);
          message.pending = false;
          message.status = '';
          this._render(message);
          this._utterances.delete(e.utterance_id);
          this._setLive('');
          this._announce('You said: ' + text);
          this._save();
          this._emit('message', { text, source: 'voice' });
          break;
        }
        case 'speech.discarded': {
          const message = this._utterances.get(e.utterance_id);
          if (message) this._remove(message);
          this._utterances.delete(e.utterance_id);
          this._setLive('Sorry, I did not catch that.');
          this._announce('Sorry, I did not catch that.');
          break;
        }
        case 'output_audio.start':
          // Closed panel or page gone: the assistant does not speak (its text still comes).
          if (this._open && !this._pageGone) this._player.begin(e.stream_id, e.sample_rate);
          else this._player.clear();
          break;
        case 'output_audio.done':
          this._player.finish(e.stream_id);
          break;
        case 'output_audio.clear':
          if (this._player.stream && this._player.stream.id === e.stream_id) this._player.clear();
          break;
        case 'error':
          this._onError(e);
          break;
        default:
          break;
      }
    }

    _onError(e) {
      if (e.code === 'no_active_reply') return; // a stop that crossed the reply's end
      const text = String(e.message || e.code || 'error');
      if (e.source === 'audio.start' || e.source === 'audio') {
        this._micStop(false);
        this._setNotice('Voice: ' + text);
      } else if (MESSAGE_ERRORS[e.code] && this._inflight.length) {
        // The server turned a message down before answering it (messages are taken in
        // order): that bubble is marked, its text kept, with Retry and Edit.
        const message = this._inflight.shift();
        message.tooLong = e.code === 'text_too_long' || e.code === 'frame_too_large';
        this._fail(message, MESSAGE_ERRORS[e.code] + (message.tooLong ? ' (' + text + ')' : ''));
        this._announce('Your message was not sent: ' + message.reason + '.');
      } else {
        this._add({ role: 'note', text: 'Error: ' + text });
      }
      this._emit('error', { code: e.code, message: text });
    }

    _fail(message, reason) {
      message.status = 'failed';
      message.reason = reason;
      this._render(message);
      this._save();
    }

    // --- messages -----------------------------------------------------------------------

    _add(fields, at = null) {
      if (this._undo && fields.role !== 'note') this._commitFresh(); // the person went on
      const message = Object.assign({ role: 'assistant', text: '', status: '' }, fields);
      if (at === null || at >= this._messages.length) this._messages.push(message);
      else this._messages.splice(at, 0, message);
      this._render(message);
      this._save();
      return message;
    }

    _utterance(id, text) {
      let message = this._utterances.get(id);
      if (!message) {
        message = this._add({ role: 'user', text, status: 'listening' });
        message.pending = true;
        message.voice = true;
        message.utteranceId = id;
        this._utterances.set(id, message);
      } else {
        message.text = text;
        this._render(message);
      }
      return message;
    }

    _remove(message) {
      const i = this._messages.indexOf(message);
      if (i >= 0) this._messages.splice(i, 1);
      this._inflight = this._inflight.filter((m) => m !== message);
      this._dirty.delete(message);
      if (message.node) message.node.remove();
      this._save();
      this._updateJump();
    }

    /** Streaming: render at most once a frame, however fast the deltas come. */
    _renderSoon(message) {
      this._dirty.add(message);
      if (this._frame) return;
      const flush = () => {
        this._frame = 0;
        const dirty = [...this._dirty];
        this._dirty.clear();
        for (const m of dirty) this._render(m);
      };
      // A background tab gets no animation frames: a timer then.
      this._frame = document.hidden ? setTimeout(flush, 250) : requestAnimationFrame(flush);
    }

    _render(message) {
      if (!message.node) {
        const item = document.createElement('li');
        item.append(node('span', 'who'), node('div', 'text'), node('span', 'badge'));
        message.node = item;
        // In the conversation's order (a note can go in before messages typed later).
        const i = this._messages.indexOf(message);
        const next = this._messages.slice(i + 1).find((m) => m.node && m.node.parentNode === this._el.items);
        this._el.items.insertBefore(item, next ? next.node : null);
      }
      const item = message.node;
      const [who, body, badge] = item.children;
      who.textContent =
        message.role === 'user' ? 'You:' : message.role === 'note' ? 'Note:' : this.config.title + ':';
      item.className = 'msg ' + message.role + (message.voice ? ' voice' : '');
      item.dataset.role = message.role;
      item.dataset.status = message.status || 'done';
      item.setAttribute('aria-busy', message.status === 'streaming' || message.status === 'listening' ? 'true' : 'false');
      const text = message.text.replace(/^\s+/, '');
      if (message.role === 'assistant') {
        // Markdown, as DOM nodes: markup in a reply shows as text and never runs.
        if (body.shown !== text) markdown(body, text);
        body.shown = text;
      } else {
        body.textContent = text; // textContent only
      }
      const failed = message.role === 'user' && message.status === 'failed';
      badge.textContent = failed
        ? 'Not sent: ' + (message.reason || 'it failed')
        : STATUS_LABELS[message.status] || '';
      let actions = item.querySelector('.actions');
      if (failed && !actions) {
        actions = node('span', 'actions');
        const retry = node('button', 'retry', 'Retry');
        const edit = node('button', 'edit', 'Edit');
        retry.type = edit.type = 'button';
        retry.setAttribute('aria-label', 'Retry sending this message');
        edit.setAttribute('aria-label', 'Edit this message');
        actions.append(retry, edit);
        item.appendChild(actions);
      }
      if (actions && !failed) actions.remove();
      if (actions && failed) actions.firstChild.hidden = !!message.tooLong; // Edit, then send
      if (this._bulk) return; // many at once: one scroll at the end
      if (this._pinned) this._scrollToEnd();
      else this._updateJump();
    }

    _renderAll(messages) {
      this._bulk = true;
      try {
        for (const m of messages) {
          if (m.node) this._el.items.appendChild(m.node);
          this._render(m);
        }
      } finally {
        this._bulk = false;
      }
    }

    _onItemClick(event) {
      const button = event.target.closest('button');
      if (!button) return;
      if (button.classList.contains('copy')) {
        this._copy(button);
        return;
      }
      const message = this._messages.find((m) => m.node === button.closest('li.msg'));
      if (!message) return;
      if (button.classList.contains('retry')) {
        this._remove(message);
        this.send(message.text);
        this._el.input.focus();
      } else if (button.classList.contains('edit')) {
        this._remove(message);
        const input = this._el.input;
        input.value = message.text + (input.value.trim() ? '\n' + input.value : '');
        this._autosize();
        this._updateCount();
        this._updateBusy();
        input.focus();
      }
    }

    async _copy(button) {
      const code = button.closest('.code').querySelector('pre').textContent;
      let ok = false;
      try {
        await navigator.clipboard.writeText(code);
        ok = true;
      } catch (_) {
        // No clipboard API (an insecure page, or refused): a selection and the old command.
        const area = node('textarea', 'offscreen');
        area.value = code;
        this.shadowRoot.appendChild(area);
        area.select();
        try {
          ok = document.execCommand('copy');
        } catch (_) {
          ok = false;
        }
        area.remove();
        button.focus();
      }
      button.textContent = ok ? 'Copied' : 'Copy failed';
      this._announce(ok ? 'Code copied.' : 'The code could not be copied.');
      setTimeout(() => {
        button.textContent = 'Copy';
      }, 2000);
    }

    _restore() {
      let stored = null;
      try {
        stored = JSON.parse(sessionStorage.getItem(this._storageKey()) || 'null');
      } catch (_) {
        stored = null;
      }
      this._storedOpen = stored && typeof stored.open === 'boolean' ? stored.open : null;
      if (!stored || !Array.isArray(stored.messages)) return;
      for (const m of stored.messages) {
        if (!m || typeof m.text !== 'string' || !['user', 'assistant', 'note'].includes(m.role)) continue;
        let status = typeof m.status === 'string' ? m.status : '';
        if (status === 'streaming') status = 'interrupted';
        if (status === 'listening' || status === 'queued') continue;
        const reason = typeof m.reason === 'string' ? m.reason : '';
        this._messages.push({ role: m.role, text: m.text, status, reason, tooLong: !!m.tooLong });
      }
      this._renderAll(this._messages); // scrolled to the end when the panel shows
      if (this._messages.some((m) => m.role !== 'note')) {
        this._needsNote = true;
        this._noteAt = this._messages.length;
      }
    }

    _save() {
      clearTimeout(this._saveTimer);
      this._saveTimer = null;
      if (!this.config) return;
      const messages = this._messages
        .filter((m) => !m.pending && m.status !== 'queued')
        .slice(-MAX_STORED_MESSAGES)
        .map(({ role, text, status, reason, tooLong }) =>
          status === 'failed' && role === 'user' ? { role, text, status, reason, tooLong } : { role, text, status },
        );
      try {
        sessionStorage.setItem(this._storageKey(), JSON.stringify({ messages, open: this._open }));
      } catch (_) {
        /* storage full or disabled: the conversation just is not kept */
      }
    }

    _saveSoon() {
      if (!this._saveTimer) this._saveTimer = setTimeout(() => this._save(), 400);
    }

    // --- scrolling ------------------------------------------------------------------------

    /** The log scrolls, except on very short screens where the whole panel does. */
    _scroller() {
      return getComputedStyle(this._el.log).overflowY === 'visible' ? this._el.panel : this._el.log;
    }

    _scrollToEnd() {
      const s = this._scroller();
      s.scrollTop = s.scrollHeight;
      this._updateJump();
    }

    _onScroll() {
      const s = this._scroller();
      if (!s.clientHeight) return; // closed
      this._pinned = s.scrollHeight - s.scrollTop - s.clientHeight < 48;
      this._updateJump();
    }

    _updateJump() {
      const s = this._scroller();
      const away = s.clientHeight > 0 && s.scrollHeight - s.scrollTop - s.clientHeight >= 48;
      this._el.jump.hidden = this._pinned || !away;
    }

    // --- UI state -----------------------------------------------------------------------

    _setOpen(open, byUser = false) {
      const el = this._el;
      this._open = this.config.layout !== 'floating' ? true : !!open;
      this.dataset.open = String(this._open);
      // A closed panel shows no microphone button, so nothing may listen: closing it turns
      // the microphone off (it stays off when the panel opens again) and stops the
      // assistant speaking. A reply still streaming goes on as text, there on reopening.
      if (!this._open) this._quiet();
      el.launcher.setAttribute('aria-expanded', String(this._open));
      el.panel.hidden = !this._open;
      if (this._open) {
        this._setUnread(0);
        if (this._pinned) this._scrollToEnd();
      }
      this._setUnread(this._unread); // the launcher's label
      this._updateModal();
      if (byUser) {
        this._save();
        if (this._open) el.input.focus();
        else el.launcher.focus();
      }
    }

    _setUnread(count) {
      const el = this._el;
      this._unread = count;
      this.dataset.unread = String(count);
      el.unread.hidden = !count;
      el.unread.textContent = count > 9 ? '9+' : String(count);
      let label = this._open ? 'Close the chat' : 'Open the chat';
      if (!this._open && count) label += ` (${count} new ${count === 1 ? 'reply' : 'replies'})`;
      el.launcher.setAttribute('aria-label', label);
    }

    /** The floating panel, when it fills the screen, is a modal dialog holding the focus. */
    _updateModal() {
      if (this.config.layout !== 'floating') return;
      const modal = this._open && !!this._fullscreenQuery && this._fullscreenQuery.matches;
      this._modal = modal;
      this._el.panel.setAttribute('aria-modal', String(modal));
      this.dataset.modal = String(modal);
    }

    _trapFocus(event) {
      if (!this._modal) return;
      const items = [...this._el.panel.querySelectorAll('button, textarea, select, a[href], [tabindex="0"]')].filter(
        (e) => !e.disabled && e.getClientRects().length > 0,
      );
      if (!items.length) return;
      const active = this.shadowRoot.activeElement;
      const at = items.indexOf(active);
      if (event.shiftKey && at <= 0) {
        event.preventDefault();
        items[items.length - 1].focus();
      } else if (!event.shiftKey && (at < 0 || at === items.length - 1)) {
        event.preventDefault();
        items[0].focus();
      }
    }

    /** Turn the microphone off (audio.stop) and stop the reply audio: the panel closed or
     * the page went away. */
    _quiet() {
      this._micStop(true);
      this._player.clear(true);
    }

    /** The microphone may open only while its button is on screen to say so. */
    _micAllowed() {
      return this._running && this._open && !this._pageGone && this.config.voice;
    }

    /** Why this text cannot be sent (the server's limits), or '' when it can. */
    _overLimit(text) {
      const limits = this._limits;
      if (!limits || !text) return '';
      const chars = [...text].length;
      const max = limits.max_text_chars;
      if (chars > max) {
        return `This message is ${chars.toLocaleString()} characters long; the limit is ${max.toLocaleString()}. Shorten it to send it: your text is kept.`;
      }
      const bytes = new TextEncoder().encode(JSON.stringify({ type: 'user.message', text, id: 'm00000' })).length;
      if (limits.max_message_bytes && bytes > limits.max_message_bytes) {
        return 'This message is too large to send. Shorten it to send it: your text is kept.';
      }
      return '';
    }

    _updateCount() {
      const el = this._el;
      const limits = this._limits;
      const text = el.input.value.trim();
      const over = !!this._overLimit(text);
      const chars = limits ? [...text].length : 0;
      const show = !!limits && (over || chars >= limits.max_text_chars * COUNT_FROM);
      el.count.hidden = !show;
      el.count.textContent = show
        ? `${chars.toLocaleString()} / ${limits.max_text_chars.toLocaleString()} characters${over ? ': too long' : ''}`
        : '';
      el.count.classList.toggle('over', over);
      if (over) el.input.setAttribute('aria-invalid', 'true');
      else el.input.removeAttribute('aria-invalid');
      if (!over && el.notice.dataset.kind === 'limit') this._setNotice('');
    }

    _submit() {
      const el = this._el;
      if (this.shadowRoot.activeElement === el.send) el.input.focus();
      const problem = this._overLimit(el.input.value.trim());
      if (problem) {
        this._setNotice(problem, null, 'limit');
        this._updateCount();
        el.input.focus();
        return;
      }
      if (this.send(el.input.value)) {
        el.input.value = '';
        this._autosize();
        this._updateCount();
        this._updateBusy();
      }
    }

    _autosize() {
      const input = this._el.input;
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight, 160) + 'px';
    }

    _escape() {
      if (this.stop()) return;
      if (this._mic.state !== 'off') {
        this._micStop(true);
        return;
      }
      if (this.config.layout === 'floating') this._setOpen(false, true);
    }

    /** Send and Stop share one place, so that nothing moves under a finger: Stop while a
     * reply runs and the text box is empty; Send (which interrupts the reply) otherwise. */
    _updateBusy() {
      const el = this._el;
      const busy = !!this._activeReply || this._player.playing || !!this._player.stream;
      const showStop = busy && !el.input.value.trim();
      const focused = this.shadowRoot.activeElement;
      el.stop.hidden = !showStop;
      el.send.hidden = showStop;
      if ((focused === el.send && showStop) || (focused === el.stop && !showStop)) el.input.focus();
      this.dataset.busy = String(busy);
    }

    playbackChanged(playing) {
      this.dataset.playing = String(playing);
      if (playing) this._setLive('Speaking…');
      else if (this._el.live.textContent === 'Speaking…') this._setLive('');
      this._updateBusy();
      this._updateVoiceBar();
    }

    /** The notice under the conversation: an alert (microphone, limits, refusals) or an
     * info line ("Conversation cleared"), with an optional action; always dismissible. */
    _setNotice(text, action = null, kind = 'error') {
      const el = this._el;
      // Hiding the notice that has the focus (its Undo, its Dismiss): the focus goes on.
      if (!text && el.notice.contains(this.shadowRoot.activeElement)) el.input.focus();
      el.noticeText.textContent = text;
      el.notice.hidden = !text;
      el.notice.dataset.kind = text ? kind : '';
      this._noticeRun = text && action ? action.run : null;
      el.noticeAction.hidden = !(text && action);
      el.noticeAction.textContent = text && action ? action.label : '';
    }

    _setLive(text) {
      this._el.live.textContent = text; // shown, not announced (see _announce)
      this._updateVoiceBar();
    }

    /** Say this to screen readers (a polite live region): state changes and final text. */
    _announce(text) {
      const region = this._el.announce;
      region.textContent = region.textContent === text ? text + '\u00a0' : text;
    }

    _updateVoiceBar() {
      const show = this._mic.state !== 'off' || this.dataset.playing === 'true' || !!this._el.live.textContent;
      this._el.voice.hidden = !show;
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent('chinwag:' + name, { detail, bubbles: true, composed: true }));
    }

    // --- microphone ---------------------------------------------------------------------

    get _pushToTalk() {
      return this._el.mode.value === 'push_to_talk';
    }

    _wireMic() {
      const mic = this._el.mic;
      mic.addEventListener('click', (event) => {
        if (this._pushToTalk) {
          event.preventDefault();
          return;
        }
        if (this._mic.state === 'off') this._micStart();
        else this._micStop(true);
      });
      // Push to talk: hold the button (pointer), or hold Space or Enter on it (keyboard).
      mic.addEventListener('pointerdown', (event) => {
        if (!this._pushToTalk || event.button !== 0) return;
        event.preventDefault();
        try {
          mic.setPointerCapture(event.pointerId);
        } catch (_) {
          /* not capturable */
        }
        this._micStart();
      });
      const release = () => {
        if (this._pushToTalk) this._micStop(true);
      };
      mic.addEventListener('pointerup', release);
      mic.addEventListener('pointercancel', release);
      mic.addEventListener('keydown', (event) => {
        if (!this._pushToTalk || (event.key !== ' ' && event.key !== 'Enter')) return;
        event.preventDefault();
        if (!event.repeat) this._micStart();
      });
      mic.addEventListener('keyup', (event) => {
        if (!this._pushToTalk || (event.key !== ' ' && event.key !== 'Enter')) return;
        event.preventDefault();
        this._micStop(true);
      });
      mic.addEventListener('blur', release);
    }

    _updateMicButton() {
      const mic = this._el.mic;
      const on = this._mic.state !== 'off';
      mic.setAttribute('aria-pressed', String(on));
      let label;
      if (this._pushToTalk) label = on ? 'Talking: release to send' : 'Hold to talk';
      else label = on ? 'Stop listening' : 'Start talking (hands-free)';
      mic.setAttribute('aria-label', label);
      mic.title = label;
      mic.classList.toggle('on', on);
    }

    _setMic(state) {
      const was = this._mic.state;
      this._mic.state = state === 'listening' || state === 'starting' ? state : 'off';
      if (state === 'listening' && was !== 'listening') this._announce('Listening.');
      if (this._mic.state === 'off' && was === 'listening') this._announce('Microphone off.');
      this.dataset.mic = state;
      this._updateMicButton();
      this._updateVoiceBar();
    }

    async _audioContext() {
      if (!this._ctx) {
        const Ctx = window.AudioContext || window.webkitAudioContext;
        if (!Ctx) throw Object.assign(new Error('no Web Audio'), { name: 'NotSupportedError' });
        this._ctx = new Ctx({ latencyHint: 'interactive' });
        this._player.ctx = this._ctx;
        this._workletReady = loadWorklet(this._ctx).catch((err) => {
          this._workletReady = null;
          throw Object.assign(new Error(String(err)), { name: 'WorkletError' });
        });
      }
      if (this._ctx.state !== 'running') await this._ctx.resume();
      if (!this._workletReady) {
        this._workletReady = loadWorklet(this._ctx).catch((err) => {
          this._workletReady = null;
          throw Object.assign(new Error(String(err)), { name: 'WorkletError' });
        });
      }
      await this._workletReady;
      return this._ctx;
    }

    async _micStart() {
      const mic = this._mic;
      if (mic.state !== 'off' || !this._micAllowed()) return;
      if (!this._live) {
        this._setNotice('Not connected yet: voice starts once the assistant is connected.');
        return;
      }
      this._setNotice('');
      // The person is talking: whatever the assistant was saying stops now.
      if (this._pushToTalk) this.stop();
      const attempt = (mic.attempt = (mic.attempt || 0) + 1);
      mic.stopWanted = false;
      mic.started = false;
      this._setMic('starting');
      try {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          throw Object.assign(new Error('no getUserMedia'), { name: 'NotSupportedError' });
        }
        const streamPromise = navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
        });
        streamPromise.catch(() => {}); // handled below, after the audio context is ready
        let ctx;
        try {
          ctx = await this._audioContext();
        } catch (err) {
          streamPromise.then((s) => s.getTracks().forEach((t) => t.stop()), () => {});
          throw err;
        }
        const stream = await streamPromise;
        if (
          attempt !== mic.attempt ||
          mic.state !== 'starting' ||
          mic.stopWanted ||
          !this._live ||
          !this._micAllowed()
        ) {
          stream.getTracks().forEach((t) => t.stop());
          this._setMic('off');
          return;
        }
        mic.stream = stream;
        mic.source = ctx.createMediaStreamSource(stream);
        mic.node = new AudioWorkletNode(ctx, 'chinwag-mic', {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          outputChannelCount: [1],
          processorOptions: { targetRate: MIC_RATE, frameMs: MIC_FRAME_MS },
        });
        // A silent path to the output keeps the node pulled by the audio graph.
        mic.sink = ctx.createGain();
        mic.sink.gain.value = 0;
        mic.source.connect(mic.node);
        mic.node.connect(mic.sink);
        mic.sink.connect(ctx.destination);
        this.sendEvent({
          type: 'audio.start',
          sample_rate: MIC_RATE,
          mode: this._pushToTalk ? 'push_to_talk' : 'vad',
          partial_transcripts: true,
        });
        mic.started = true;
        mic.frames = 0;
        mic.node.port.onmessage = ({ data }) => this._onMicFrame(data);
        this._setMic('listening');
        this._setLive(this._pushToTalk ? 'Listening… release to send.' : 'Listening…');
      } catch (err) {
        if (attempt !== mic.attempt) return;
        this._releaseMic();
        const [state, text] = micError(err);
        this._setMic(state);
        this._setNotice(text);
        this._emit('error', { code: 'microphone_' + state, message: text });
      }
    }

    _onMicFrame(data) {
      const mic = this._mic;
      if (!data || !mic.started) return;
      if (!this._micAllowed()) {
        this._micStop(true); // never a frame while no visible control says it is listening
        return;
      }
      const ws = this._ws;
      if (data.pcm && this._live && ws && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 1 << 20) {
        ws.send(data.pcm);
        mic.frames += 1;
        this.dataset.micFrames = String(mic.frames);
      }
      const level = typeof data.level === 'number' ? data.level : 0;
      // Meter: -60 dBFS .. 0 dBFS mapped to 0 .. 1.
      const db = 20 * Math.log10(level + 1e-9);
      const norm = Math.max(0, Math.min(1, (db + 60) / 60));
      this._el.level.style.transform = `scaleX(${norm.toFixed(3)})`;
      if (norm > mic.peak) {
        mic.peak = norm;
        this.dataset.micPeak = norm.toFixed(2);
      }
    }

    _releaseMic() {
      const mic = this._mic;
      if (mic.node) {
        mic.node.port.onmessage = null;
        try {
          mic.node.port.postMessage('stop');
          mic.node.disconnect();
        } catch (_) {
          /* already gone */
        }
      }
      if (mic.source) mic.source.disconnect();
      if (mic.sink) mic.sink.disconnect();
      if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
      mic.node = mic.source = mic.sink = mic.stream = null;
      this._el.level.style.transform = 'scaleX(0)';
    }

    _micStop(send) {
      const mic = this._mic;
      if (mic.state === 'starting') mic.stopWanted = true;
      if (mic.state === 'off') return;
      if (send && mic.started) this.sendEvent({ type: 'audio.stop' });
      mic.started = false;
      this._releaseMic();
      this._setMic('off');
      if (this._el.live.textContent.startsWith('Listening')) this._setLive('');
    }
  }

  customElements.define('chinwag-widget', ChinwagWidget);

  // One tag is enough: without a <chinwag-widget> in the page, add a floating one.
  function mount() {
    if (!document.querySelector('chinwag-widget')) {
      const widget = document.createElement('chinwag-widget');
      widget.setAttribute('data-auto', '');
      document.body.appendChild(widget);
    }
  }
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount, { once: true });
})();
