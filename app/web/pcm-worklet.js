// Hands the microphone's samples (at the AudioContext's rate) to the page in 100 ms blocks.
class PcmBlocks extends AudioWorkletProcessor {
  constructor() { super(); this.block = []; this.size = sampleRate / 10; }
  process(inputs) {
    const channel = inputs[0][0];
    if (channel) {
      this.block.push(...channel);
      if (this.block.length >= this.size) { this.port.postMessage(Float32Array.from(this.block)); this.block = []; }
    }
    return true;
  }
}
registerProcessor("pcm-blocks", PcmBlocks);
