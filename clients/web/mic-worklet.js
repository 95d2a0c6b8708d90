/* chinwag web widget: the microphone AudioWorklet processor.
 *
 * Runs on the audio rendering thread. Takes the microphone at the AudioContext's own rate
 * (44.1 or 48 kHz, usually), downmixes it to mono, resamples it with a windowed-sinc
 * low-pass interpolator to the rate the stream declares in `audio.start` (16 kHz by default),
 * and posts 16-bit little-endian PCM frames of `frameMs` (20 ms) to the widget, with the
 * frame's RMS level for the meter.
 *
 * The file is loaded with `audioContext.audioWorklet.addModule(url)`. A worklet module from
 * another origin needs CORS headers, so when the widget is embedded in a page of another
 * origin it may instead load this file as a classic <script> (which needs none): then the
 * processor is not registered here but its source is handed to the widget, which passes it
 * to addModule() as a blob: URL. Either way this function is the one source of the processor.
 */
(function () {
  function chinwagMicWorklet() {
    'use strict';

    const SUBSTEPS = 512; // kernel table resolution, per input sample
    const ZERO_CROSSINGS = 10; // of the sinc, each side, at the cut-off frequency

    class ChinwagMicProcessor extends AudioWorkletProcessor {
      constructor(options) {
        super();
        const opts = (options && options.processorOptions) || {};
        this.inRate = sampleRate; // the AudioContext's rate (a global of the worklet scope)
        this.outRate = opts.targetRate || 16000;
        this.step = this.inRate / this.outRate; // input samples per output sample
        this.frameSize = Math.max(1, Math.round((this.outRate * (opts.frameMs || 20)) / 1000));
        // Low-pass below the lower of the two Nyquist frequencies, with a little margin.
        this.cutoff = Math.min(1, this.outRate / this.inRate) * 0.9;
        this.half = Math.ceil(ZERO_CROSSINGS / this.cutoff); // kernel half-width, input samples
        this.table = this.makeKernel();
        this.buf = new Float32Array(8192);
        this.len = 0; // valid samples in buf
        this.pos = 0; // position of the next output sample in buf (fractional)
        this.frame = new Int16Array(this.frameSize);
        this.filled = 0;
        this.sumSquares = 0;
        this.running = true;
        // Start with silence as history so the first output samples are defined.
        this.len = this.half;
        this.pos = this.half;
        this.port.onmessage = (event) => {
          if (event.data === 'stop') this.running = false;
        };
      }

      makeKernel() {
        // h(x) = cutoff * sinc(cutoff * x) * blackman(x / half), x in input samples.
        const n = this.half * SUBSTEPS;
        const table = new Float32Array(n + 2);
        for (let i = 0; i <= n; i++) {
          const x = i / SUBSTEPS;
          const arg = Math.PI * this.cutoff * x;
          const sinc = x === 0 ? 1 : Math.sin(arg) / arg;
          const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) +
            0.08 * Math.cos((2 * Math.PI * x) / this.half);
          table[i] = this.cutoff * sinc * w;
        }
        return table;
      }

      append(samples) {
        if (this.len + samples.length > this.buf.length) {
          const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + samples.length));
          bigger.set(this.buf.subarray(0, this.len));
          this.buf = bigger;
        }
        this.buf.set(samples, this.len);
        this.len += samples.length;
      }

      emit(sample) {
        const s = Math.max(-1, Math.min(1, sample));
        this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        this.sumSquares += s * s;
        if (this.filled === this.frameSize) {
          const level = Math.sqrt(this.sumSquares / this.frameSize);
          const pcm = this.frame.buffer; // Int16Array is little-endian on every browser platform
          this.port.postMessage({ pcm, level }, [pcm]);
          this.frame = new Int16Array(this.frameSize);
          this.filled = 0;
          this.sumSquares = 0;
        }
      }

      process(inputs) {
        if (!this.running) return false;
        const input = inputs[0];
        if (!input || input.length === 0 || input[0].length === 0) return true;
        // Downmix to mono.
        const frames = input[0].length;
        const mono = new Float32Array(frames);
        for (let c = 0; c < input.length; c++) {
          const channel = input[c];
          for (let i = 0; i < frames; i++) mono[i] += channel[i];
        }
        if (input.length > 1) {
          for (let i = 0; i < frames; i++) mono[i] /= input.length;
        }
        this.append(mono);
        // Resample: every output sample needs `half` input samples on each side.
        const { buf, half, table } = this;
        while (this.pos + half < this.len) {
          const centre = this.pos;
          const first = Math.ceil(centre - half);
          const last = Math.floor(centre + half);
          let acc = 0;
          for (let k = first; k <= last; k++) {
            const d = Math.abs(centre - k) * SUBSTEPS;
            const j = d | 0;
            const h = table[j] + (table[j + 1] - table[j]) * (d - j);
            acc += buf[k] * h;
          }
          this.emit(acc); // the kernel sums to 1: unity gain in the passband
          this.pos += this.step;
        }
        // Drop the input no longer needed (keep `half` samples of history).
        const keepFrom = Math.max(0, Math.floor(this.pos) - half - 1);
        if (keepFrom > 4096) {
          this.buf.copyWithin(0, keepFrom, this.len);
          this.len -= keepFrom;
          this.pos -= keepFrom;
        }
        return true;
      }
    }

    registerProcessor('chinwag-mic', ChinwagMicProcessor);
  }

  if (typeof AudioWorkletProcessor === 'function' && typeof registerProcessor === 'function') {
    chinwagMicWorklet();
  } else if (typeof window !== 'undefined') {
    // Loaded as a classic script by the widget (cross-origin embed): hand over the source.
    window.__chinwagMicWorkletSource = '(' + chinwagMicWorklet.toString() + ')();';
  }
})();
