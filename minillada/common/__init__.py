"""What every wing shares, importing nothing else of the package: atomic writes (`atomic`), derived
seeds (`seeds`), the folders a command writes and the cache (`folders`), and the torch-free name
lists that configs, commands and registries check input against (`names`)."""
