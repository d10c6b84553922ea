// The microphone's capture, on the audio thread: the first input channel, resampled from the
// AudioContext's rate to 24 kHz 16-bit PCM (what /v1/realtime's audio/pcm takes), posted to the
// page in 40 ms chunks (960 samples) with the context time at which the chunk's last sample was
// captured. 40 ms: a tenth of a second of delay at most before the server's VAD hears speech,
// and 25 small messages a second over the WebSocket.
"use strict";

const OUT_RATE = 24000;
const CHUNK = 960;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample
    this.out = new Int16Array(CHUNK);
    this.filled = 0;
    // Downsampling (ratio >= 1): each output sample is the mean of the input samples that fall in
    // its interval, a box filter that keeps most of the aliasing out for free. Upsampling (a
    // context under 24 kHz): linear interpolation.
    this.binSum = 0;
    this.binCount = 0;
    this.inputIndex = 0; // input samples seen, modulo nothing: a float is exact to 2^53
    this.outputIndex = 0;
    this.last = 0;
    this.started = false;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.filled === CHUNK) {
      const pcm = this.out;
      this.port.postMessage({ pcm: pcm.buffer, time: currentTime }, [pcm.buffer]);
      this.out = new Int16Array(CHUNK);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (!this.started) {
      this.started = true;
      this.port.postMessage({ started: currentTime });
    }
    if (this.ratio >= 1) {
      for (let i = 0; i < channel.length; i++) {
        const bin = Math.floor(this.inputIndex / this.ratio);
        if (bin !== this.outputIndex && this.binCount) {
          this.emit(this.binSum / this.binCount);
          this.binSum = 0;
          this.binCount = 0;
          this.outputIndex = bin;
        }
        this.binSum += channel[i];
        this.binCount++;
        this.inputIndex++;
      }
    } else {
      for (let i = 0; i < channel.length; i++) {
        const sample = channel[i];
        // Output samples whose position lies between the previous input sample and this one.
        while (this.outputIndex * this.ratio <= this.inputIndex) {
          const frac = this.outputIndex * this.ratio - (this.inputIndex - 1);
          this.emit(this.last + (sample - this.last) * Math.max(0, frac));
          this.outputIndex++;
        }
        this.last = sample;
        this.inputIndex++;
      }
    }
    return true;
  }
}

registerProcessor("chorus-capture", CaptureProcessor);
