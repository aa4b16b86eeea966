"""Words -> token indices, global alignment, replace/refine mappers: pure functions, no model."""
