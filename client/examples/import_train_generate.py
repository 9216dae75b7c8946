"""Import a dataset, train textual inversion then LoRA on it, generate a batch and wait.

    FAIRSKIN_URL=http://127.0.0.1:8000 FAIRSKIN_TOKEN=fsk_… \\
        python client/examples/import_train_generate.py demo.csv demo-images.zip

The settings are the CPU-sized ones of the README's user guide (a few steps, 2 denoising steps).
"""

import os
import sys

from fairskin_client import FairSkin

QUICK = {"steps": 4, "validation_every": 1000, "validation_inference_steps": 1, "batch_size": 2}

metadata, images = sys.argv[1], sys.argv[2]
fs = FairSkin(os.environ["FAIRSKIN_URL"], os.environ["FAIRSKIN_TOKEN"])

with open(metadata, "rb") as csv_file, open(images, "rb") as zip_file:
    fs.datasets.upload(fmt="csv", name="demo", metadata=csv_file, images=zip_file).wait()
fs.datasets.preprocess("demo").wait()
print("splits:", fs.datasets.split("demo", seed=0))

lesions = {"datasets": ["demo"], "diagnoses": ["MEL", "NV"]}  # on the server's base model
ti = fs.runs.create(kind="textual_inversion", config=QUICK, **lesions)
fs.runs.wait(ti["id"])
lora = fs.runs.create(kind="lora", parent=ti["id"], config=QUICK, **lesions)
fs.runs.wait(lora["id"])

batch = fs.batches.create(
    model_run=lora["id"],
    target=8,
    diagnoses=["MEL", "NV"],
    fst_distribution={"5": 0.5, "6": 0.5},
    steps=2,
    overgeneration=2,
    shard_size=4,
    device_batch=4,
)
done = fs.batches.wait(batch["id"])
print(f"batch {done['id']}: {sum(s['accepted'] for s in done['strata'])} images accepted")
