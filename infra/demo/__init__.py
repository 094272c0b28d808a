"""`jaxtune demo`: base model -> prepared data -> baseline eval -> fine-tune -> export -> served,
evaluated specialist, with one report. Each stage records its outputs so a re-run continues
from the first unfinished stage."""
