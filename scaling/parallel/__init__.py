"""Model-, pipeline- and sharded-parallel strategies beside DDP (scaling/strategies.py keeps the
interface and the registry): FSDP2, DeepSpeed ZeRO, tensor parallel, pipeline parallel and their 2D
combinations, plus what each rank measures about them."""
