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
 * in the page with textContent; innerHTML holds the static template and nothing else.
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

  const ICONS = {
    chat: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>',
    close: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M6 6l12 12M18 6L6 18"/></svg>',
    fresh: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 5v14M5 12h14"/></svg>',
    mic: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3M8 21h8"/></svg>',
    stop: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><rect x="6" y="6" width="12" height="12" rx="2"/></svg>',
    send: '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 12l16-8-6 16-2-7-8-1z"/></svg>',
  };

  // Static markup only (no data): every dynamic text goes in with textContent.
  const TEMPLATE = `
<link rel="stylesheet" href="${asset('chinwag-widget.css')}">
<div class="root" part="root">
  <button class="launcher" type="button" aria-expanded="false" aria-controls="panel"
          aria-label="Open the chat">${ICONS.chat}</button>
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
    <ol class="log" role="log" aria-label="Conversation" tabindex="0"></ol>
    <p class="notice" role="alert" hidden></p>
    <div class="voice" hidden>
      <div class="meter" aria-hidden="true"><span class="level"></span></div>
      <p class="live" aria-live="polite"></p>
    </div>
    <form class="composer">
      <textarea class="input" rows="1" aria-label="Message" placeholder="Type a message…"
                autocomplete="off" enterkeyhint="send"></textarea>
      <button class="round mic" type="button" aria-pressed="false"
              aria-label="Start talking">${ICONS.mic}</button>
      <button class="round stop" type="button" aria-label="Stop the reply" hidden>${ICONS.stop}</button>
      <button class="round send" type="submit" aria-label="Send message">${ICONS.send}</button>
    </form>
    <div class="tools">
      <label class="mode-label">Microphone
        <select class="mode">
          <option value="vad">hands-free</option>
          <option value="push_to_talk">push to talk</option>
        </select>
      </label>
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
        log: $('.log'), notice: $('.notice'), voice: $('.voice'), level: $('.level'), live: $('.live'),
        form: $('.composer'), input: $('.input'), mic: $('.mic'), stop: $('.stop'), send: $('.send'),
        tools: $('.tools'), mode: $('.mode'),
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
      el.mode.value = this.config.micMode;
      if (!this.config.voice) {
        el.mic.hidden = true;
        el.tools.querySelector('.mode-label').hidden = true;
      }
      // Hidden until the stylesheet is in, so the page never shows it unstyled (and a hidden
      // text box cannot take the focus: autofocus waits for it too).
      const styled = () => {
        el.root.classList.add('styled');
        if (this.config.autofocus && this._open) el.input.focus();
      };
      root.querySelector('link').addEventListener('load', styled);
      root.querySelector('link').addEventListener('error', styled);

      this._restore();
      this._setOpen(this._storedOpen !== null ? this._storedOpen : this.config.open);

      el.launcher.addEventListener('click', () => this._setOpen(!this._open, true));
      el.close.addEventListener('click', () => this._setOpen(false, true));
      el.fresh.addEventListener('click', () => this.newConversation());
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
      el.input.addEventListener('input', () => this._autosize());
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
      this._player.clear(true);
      const message = this._add({ role: 'user', text: clean, status: this._live ? '' : 'queued' });
      const event = { type: 'user.message', text: clean, id: 'm' + ++this._seq };
      if (this._live) this.sendEvent(event);
      else this._outbox.push({ event, message });
      this._emit('message', { text: clean, source: 'keyboard' });
      return true;
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

    /** Forget the conversation here and on the server. */
    newConversation() {
      this.stop();
      this._messages = [];
      this._replies.clear();
      this._utterances.clear();
      this._activeReply = null;
      this._needsNote = false;
      this._el.log.textContent = '';
      this._setNotice('');
      this._save();
      if (this._live) {
        const start = { type: 'session.start' };
        if (this.config.persona) start.persona = this.config.persona;
        if (Object.keys(this._generation).length) start.generation = this._generation;
        this.sendEvent(start);
      }
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

    // --- connection ---------------------------------------------------------------------

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
      ws.onopen = () => {
        if (this._ws !== ws) return;
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
        this._lost();
      };
    }

    _lost() {
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
      this._activeReply = null;
      this._updateBusy();
      if (this._messages.some((m) => m.role !== 'note')) this._needsNote = true;
      this._save();
      if (!this._running) return;
      const delay = Math.round(this._backoff * (0.8 + Math.random() * 0.4));
      this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
      // One steady text for the whole outage, so screen readers announce it once.
      this._setStatus(
        'reconnecting',
        this._everConnected ? 'Connection lost. Reconnecting…' : 'Cannot reach the assistant. Reconnecting…',
      );
      this._retryTimer = setTimeout(() => this._connect(), delay);
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
      if (first && this._needsNote) {
        this._needsNote = false;
        this._add({
          role: 'note',
          text: 'New session: the assistant does not remember the messages above.',
        });
      }
      const queued = this._outbox;
      this._outbox = [];
      for (const { event, message } of queued) {
        message.status = '';
        this._render(message);
        this.sendEvent(event);
      }
      this._save();
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
          this._activeReply = e.reply_id;
          this._updateBusy();
          break;
        }
        case 'reply.delta': {
          const message = this._replies.get(e.reply_id);
          if (message && typeof e.text === 'string') {
            message.text += e.text;
            this._render(message);
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
            if (!message.text.trim() && e.status !== 'completed') this._remove(message);
            else this._render(message);
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
          break;
        case 'transcript.partial':
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
          this._save();
          this._emit('message', { text, source: 'voice' });
          break;
        }
        case 'speech.discarded': {
          const message = this._utterances.get(e.utterance_id);
          if (message) this._remove(message);
          this._utterances.delete(e.utterance_id);
          this._setLive('Sorry, I did not catch that.');
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
      } else {
        this._add({ role: 'note', text: 'Error: ' + text });
      }
      this._emit('error', { code: e.code, message: text });
    }

    // --- messages -----------------------------------------------------------------------

    _add(fields) {
      const message = Object.assign({ role: 'assistant', text: '', status: '' }, fields);
      this._messages.push(message);
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
      if (message.node) message.node.remove();
      this._save();
    }

    _render(message) {
      const log = this._el.log;
      const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
      if (!message.node) {
        const item = document.createElement('li');
        const who = document.createElement('span');
        who.className = 'who';
        who.textContent =
          message.role === 'user' ? 'You:' : message.role === 'note' ? 'Note:' : this.config.title + ':';
        const body = document.createElement('p');
        body.className = 'text';
        const badge = document.createElement('span');
        badge.className = 'badge';
        item.append(who, body, badge);
        message.node = item;
        log.appendChild(item);
      }
      const item = message.node;
      item.className = 'msg ' + message.role + (message.voice ? ' voice' : '');
      item.dataset.role = message.role;
      item.dataset.status = message.status || 'done';
      item.setAttribute('aria-busy', message.status === 'streaming' || message.status === 'listening' ? 'true' : 'false');
      // textContent only: markup in a message or a reply shows as text and never runs.
      item.querySelector('.text').textContent = message.text.replace(/^\s+/, '');
      const labels = { stopped: 'stopped', interrupted: 'interrupted', failed: 'failed', queued: 'waiting to send' };
      item.querySelector('.badge').textContent = labels[message.status] ? labels[message.status] : '';
      if (nearBottom || message.role === 'user') log.scrollTop = log.scrollHeight;
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
        this._messages.push({ role: m.role, text: m.text, status });
      }
      for (const message of this._messages) this._render(message);
      if (this._messages.some((m) => m.role !== 'note')) this._needsNote = true;
    }

    _save() {
      clearTimeout(this._saveTimer);
      this._saveTimer = null;
      if (!this.config) return;
      const messages = this._messages
        .filter((m) => !m.pending && m.status !== 'queued')
        .slice(-MAX_STORED_MESSAGES)
        .map(({ role, text, status }) => ({ role, text, status }));
      try {
        sessionStorage.setItem(this._storageKey(), JSON.stringify({ messages, open: this._open }));
      } catch (_) {
        /* storage full or disabled: the conversation just is not kept */
      }
    }

    _saveSoon() {
      if (!this._saveTimer) this._saveTimer = setTimeout(() => this._save(), 400);
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
      el.launcher.setAttribute('aria-label', this._open ? 'Close the chat' : 'Open the chat');
      el.panel.hidden = !this._open;
      if (byUser) {
        this._save();
        if (this._open) el.input.focus();
        else el.launcher.focus();
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

    _submit() {
      const el = this._el;
      if (this.send(el.input.value)) {
        el.input.value = '';
        this._autosize();
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

    _updateBusy() {
      const busy = !!this._activeReply || this._player.playing || !!this._player.stream;
      this._el.stop.hidden = !busy;
      this.dataset.busy = String(busy);
    }

    playbackChanged(playing) {
      this.dataset.playing = String(playing);
      if (playing) this._setLive('Speaking…');
      else if (this._el.live.textContent === 'Speaking…') this._setLive('');
      this._updateBusy();
      this._updateVoiceBar();
    }

    _setNotice(text) {
      this._el.notice.textContent = text;
      this._el.notice.hidden = !text;
    }

    _setLive(text) {
      this._el.live.textContent = text;
      this._updateVoiceBar();
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
      this._mic.state = state === 'listening' || state === 'starting' ? state : 'off';
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
