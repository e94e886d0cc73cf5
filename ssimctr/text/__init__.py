"""Text (and image-vector) fields as model inputs: the `text_encoder` group (docs/methods.md §2.2).

`build` makes the job's encoded fields from the prepared data, with the tokens of `hashing` or the
vectors of a frozen encoder (`encoders`), cached by `cache`; `fields` is what a field is and how rows
find their index; `fusion` is the layer every model's FeatureEmbedding appends the fields with.
"""
