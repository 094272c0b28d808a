"""Process orchestration shared by the pipelines (`jaxtune demo`, `jaxtune sweep`): resumable
stages, jaxtune subcommands as child processes, and a served model's lifecycle."""
