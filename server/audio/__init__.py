"""Audio input plumbing: PCM decoding, resampling and voice activity detection."""
