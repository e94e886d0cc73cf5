"""Text (and image-vector) fields as model inputs: the `text_encoder` group (docs/methods.md §2.2), the
encode-and-cache step of a job.

`build` makes the job's encoded fields from the prepared data with the encoder the group's `_target_`
names: the tokens of `hashing.Hashing` or the vectors of a frozen encoder (`encoders.MiniLM`,
`encoders.HuggingFace`), cached by `cache`. What a field is and how rows find their index is
`ssimctr.features.encoded`; the layer every model's FeatureEmbedding appends the fields with is
`ssimctr.models.layers.encoded`. Nothing below this package imports it.
"""
