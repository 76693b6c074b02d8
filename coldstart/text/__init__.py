"""Text: templates that turn items and users into text, and the LLM encoder."""

from pydantic import BaseModel, ConfigDict, Field

from coldstart.text.encoder import EncoderConfig
from coldstart.text.templates import TextTemplates


class EmbedOptions(BaseModel):
    """How items and users are embedded: shared by `coldstart embed` and the pipeline's embed stage."""

    model_config = ConfigDict(extra="forbid")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="The text encoder.")
    templates: TextTemplates = Field(default_factory=TextTemplates, description="Item and user text.")
    replicas: int = Field(2, gt=0, description="Encoder actors in the Ray Data pool.")
    use_gpu: bool = Field(False, description="One GPU per replica.")
    threads_per_replica: int = Field(1, gt=0, description="torch threads in each CPU replica.")
    block_rows: int = Field(1024, gt=0, description="Rows per Ray Data block (the unit of work of an actor).")
    keep_vectors: bool = Field(True, description="Look each text up in the vector cache before embedding it, and "
                                                 "keep what is embedded there ($COLDSTART_VECTORS, default "
                                                 "$COLDSTART_CACHE/vectors), by encoder and text: a text embedded "
                                                 "once, for any output folder or seed, is not embedded again.")
    stream_rows: int = Field(20_000, ge=0, description="From this many texts to embed on, they stream from parquet "
                                                       "files through the actors to parquet files, never held by the "
                                                       "driver (about 45 s of fixed cost on 2 cores); fewer go "
                                                       "from the driver's memory as blocks (less fixed cost).")
