"""Image tokens for the img_gen task: a VQ image tokenizer (train, save, load, encode, decode), the
`tokenize-images` runner and reconstruction-quality metrics.

The API the img_gen task uses:
    unimp_core.imagegen.codes (no torch): load_codes(dataset_root) -> {item_id: [grid*grid codes]},
        codebook_size(dataset), the file and manifest names
    unimp_core.imagegen.vq: load_vq(dataset_root) -> VQ
        .encode(list of PIL) -> LongTensor (B, grid*grid)   .decode(LongTensor (B, grid*grid)) -> list of PIL
        .grid  .codebook_size  .resolution  .codes_per_image
Nothing here is imported by `unimp --help` (torch and diffusers load on use).
"""
