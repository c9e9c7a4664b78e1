"""The SAM-Audio model: codec, text encoder, DiT and the separator that assembles them."""
