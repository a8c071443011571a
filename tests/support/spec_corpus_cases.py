"""The cases of the malformed-spec corpus (spec_corpus.py explains the format): one mistake per job file.

BASE's lines: 1 apiVersion, 2 kind, 3 metadata, 4 name, 5 spec, 6 model, 7 path, 8 dataset, 9 paths, 10 format,
11 output, 12 path; an appended block starts at line 13. The `# <` mark is the line the message must name.
"""

from __future__ import annotations

from .spec_corpus import BASE, add, raw, sub

HEAD = "apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\n"
SPEC = BASE[BASE.index("spec:"):]

# --- the file: YAML syntax, documents, sizes -------------------------------------------------------------------
G = "file"
raw("empty-file", G, "", None, "holds no YAML document", server="client")
raw("only-comments", G, "# a job\n# to do\n", None, "holds no YAML document", server="client")
raw("tab-indent", G, HEAD + "metadata:\n\tname: demo # <\n" + SPEC, None, "not valid YAML", server="client")
raw("unclosed-flow", G, HEAD + "metadata: {name: demo\nspec: # <\n  model: {path: /m}\n", None,
    "not valid YAML", server="client")
raw("unclosed-quote", G, HEAD + 'metadata: {name: "demo}  # <\n' + SPEC, None, "is never closed",
    server="client")
raw("bad-indent", G, HEAD + "metadata:\n  name: demo\n   labels: {} # <\n" + SPEC, None, "not valid YAML",
    server="client")
raw("json-missing-comma", G, '{"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "demo"} '
    '"spec": {}}  # <', None, "not valid JSON", server="client")
raw("json-unclosed", G, '{"apiVersion": "finetune.io/v1alpha1",\n "kind": "FineTuneJob",\n'
    ' "metadata": {"name": "demo"},\n "spec": {"model": {"path": "/m"},  # <\n "output": {"path": "/o"}\n', None,
    "not valid JSON", server="client")
raw("two-documents", G, BASE + "---  # <\n" + BASE, None, "a second YAML document starts here",
    server="accepted: kubectl creates one job per document")
raw("top-level-list", G, "- apiVersion: finetune.io/v1alpha1  # <\n  kind: FineTuneJob\n", None,
    "expected a mapping", server="client")
raw("top-level-scalar", G, "just some words  # <\n", None, "expected a mapping", server="client")
raw("python-tag", G, BASE + "  image: !!python/object/apply:os.system [ls]  # <\n", None, "not valid YAML",
    server="client")
add("non-string-key", G, "  1: one  # <\n", "spec", "is not a string", server="client")
raw("huge-file", G, HEAD + "metadata: {name: demo}\nspec:\n  model: {path: /m}\n  output: {path: /o}\n  dataset:\n"
    "    format: messages\n    paths: [/d.jsonl]\n    chatTemplate: '" + "x" * (1024 * 1024) + "'\n", None,
    "a FineTuneJob is at most 1,048,576", server="client")
raw("not-utf8", G, BASE, None, "not UTF-8 text", server="client", raw=BASE.encode() + b"# \xff\xfe\n")
raw("a-folder", G, "", None, "is a folder, not a FineTuneJob file", server="client", setup="spec-is-folder")
raw("no-such-file", G, "", None, "no such file", server="client", setup="spec-missing")

# --- apiVersion, kind, metadata --------------------------------------------------------------------------------
G = "apiVersion, kind and metadata"
raw("no-apiversion", G, "kind: FineTuneJob  # <\n" + BASE[BASE.index("metadata"):], "apiVersion",
    "required field is missing; add `apiVersion: finetune.io/v1alpha1`", server="client")
raw("no-kind", G, "apiVersion: finetune.io/v1alpha1  # <\n" + BASE[BASE.index("metadata"):], "kind",
    "required field is missing; add `kind: FineTuneJob`", server="client")
sub("wrong-apiversion", G, "finetune.io/v1alpha1", "finetune.io/v1  # <", "apiVersion", "finetune.io/v1alpha1",
    server="client")
sub("wrong-kind", G, "kind: FineTuneJob", "kind: Job  # <", "kind", "'FineTuneJob'", server="client")
sub("no-metadata", G, "metadata:\n  name: demo\n", "", "metadata", "required field is missing", server="client")
sub("no-name", G, "metadata:\n  name: demo\n", "metadata:  # <\n  labels: {team: a}\n", "metadata.name",
    "required field is missing",
    server="client")
sub("name-uppercase", G, "name: demo", "name: Demo  # <", "metadata.name", "a DNS label")
sub("name-underscore", G, "name: demo", "name: my_job  # <", "metadata.name", "a DNS label")
sub("name-too-long", G, "name: demo", "name: " + "a" * 64 + "  # <", "metadata.name", "at most 63 characters",
    server="cel")
sub("name-number", G, "name: demo", "name: 42  # <", "metadata.name", "quote the value", server="client")
sub("namespace-invalid", G, "name: demo", "name: demo\n  namespace: Team_A  # <", "metadata.namespace",
    "a DNS label", server="client")
sub("label-bool", G, "name: demo", "name: demo\n  labels: {gpu: true}  # <", "metadata.labels.gpu",
    "quote the value", server="client")
sub("label-key-invalid", G, "name: demo", "name: demo\n  labels: {'bad key': x}  # <", "metadata.labels.bad key",
    "a label key", server="client")
sub("label-value-long", G, "name: demo", "name: demo\n  labels: {team: " + "v" * 64 + "}  # <",
    "metadata.labels.team", "at most 63 characters", server="client")
sub("annotation-number", G, "name: demo", "name: demo\n  annotations: {owner: 7}  # <", "metadata.annotations.owner",
    "quote the value", server="client")
raw("no-spec", G, BASE[:BASE.index("spec:")].replace("v1alpha1", "v1alpha1  # <"), "spec", "required field is missing")
raw("spec-list", G, BASE[:BASE.index("spec:")] + "spec: [model]  # <\n", "spec", "should be a mapping of fields")

# --- unknown and duplicate keys --------------------------------------------------------------------------------
G = "unknown and duplicate keys"
raw("top-level-typo", G, BASE.replace("spec:", "specs:  # <\n  x: 1\nspec:"), "specs", "unknown field 'specs'; did you mean 'spec'?")
add("spec-typo", G, "  trainig: {epochs: 1}  # <\n", "spec.trainig", "did you mean 'training'?")
sub("model-typo-case", G, "    path: {model}", "    path: {model}\n    hubid: org/m  # <", "spec.model.hubid",
    "did you mean 'hubId'?")
sub("attention-long-name", G, "    path: {model}", "    path: {model}\n    attentionImplementation: sdpa  # <",
    "spec.model.attentionImplementation", "did you mean 'attnImplementation'?")
add("lora-typo", G, "  method:\n    lora: {rnak: 8}  # <\n", "spec.method.lora.rnak", "did you mean 'rank'?")
add("snake-case", G, "  training:\n    learning_rate: 0.001  # <\n", "spec.training.learning_rate",
    "did you mean 'learningRate'? (fields are camelCase")
add("snake-and-camel", G, "  training:\n    learningRate: 0.001\n    learning_rate: 0.5  # <\n",
    "spec.training.learning_rate", "'learningRate' is given too; delete 'learning_rate'")
sub("dataset-snake", G, "    format: messages", "    format: messages\n    max_length: 512  # <",
    "spec.dataset.max_length", "did you mean 'maxLength'?")
sub("output-snake", G, "    path: {out}", "    path: {out}\n    save_every_steps: 10  # <",
    "spec.output.save_every_steps", "did you mean 'saveEverySteps'?")
add("scheduling-unknown", G, "  scheduling:\n    nodeSelectors: {gpu: h100}  # <\n", "spec.scheduling.nodeSelectors",
    "did you mean 'nodeSelector'?")
add("toleration-unknown", G, "  scheduling:\n    tolerations:\n    - {keyy: gpu, operator: Exists}  # <\n",
    "spec.scheduling.tolerations[0].keyy", "did you mean 'key'?")
sub("volume-snake", G, "    path: {out}", "    path: run\n    volume: {claim_name: out}  # <",
    "spec.output.volume.claim_name", "did you mean 'claimName'?")
add("dup-learning-rate", G, "  training:\n    learningRate: 0.0002\n    learningRate: 0.5  # <\n",
    "spec.training.learningRate", "given twice (first at line 14)", server="accepted: kubectl keeps the last value")
raw("dup-spec", G, BASE + "spec:  # <\n  suspend: true\n", "spec", "given twice (first at line 5)")  # the last wins
sub("dup-model-key", G, "  dataset:", "  model: {hubId: org/m}  # <\n  dataset:", "spec.model",
    "given twice (first at line 6)", server="accepted: kubectl keeps the last value")
sub("dup-in-flow", G, "    paths: [{data}]", "    paths: [{data}]\n    paths: [{data}]  # <", "spec.dataset.paths",
    "given twice (first at line 9)", server="accepted: kubectl keeps the last value")
add("dup-nested-lora", G, "  method:\n    lora:\n      rank: 8\n      alpha: 16\n      rank: 64  # <\n",
    "spec.method.lora.rank", "given twice (first at line 15)", server="accepted: kubectl keeps the last value")
add("unknown-status-like", G, "  phase: Running  # <\n", "spec.phase", "unknown field 'phase'")

# --- types (the CRD's types are strict: no quoted numbers, no booleans for numbers) -----------------------------
G = "types"
add("rank-true", G, "  method:\n    lora: {rank: true}  # <\n", "spec.method.lora.rank", "valid integer, not true/false")
add("rank-string", G, "  method:\n    lora: {rank: '8'}  # <\n", "spec.method.lora.rank", "write the value without quotes")
add("maxsteps-string", G, "  training: {maxSteps: \"5\"}  # <\n", "spec.training.maxSteps",
    "write the value without quotes")
add("maxsteps-float", G, "  training: {maxSteps: 5.5}  # <\n", "spec.training.maxSteps", "valid integer")
add("lr-string", G, "  training: {learningRate: '2e-4'}  # <\n", "spec.training.learningRate",
    "write the value without quotes")
add("lr-bool", G, "  training: {learningRate: true}  # <\n", "spec.training.learningRate", "valid number")
add("epochs-string", G, "  training: {epochs: 'one'}  # <\n", "spec.training.epochs", "valid number")
add("suspend-string", G, "  suspend: 'false'  # <\n", "spec.suspend", "valid boolean")
sub("packing-number", G, "    format: messages", "    format: messages\n    packing: 1  # <", "spec.dataset.packing",
    "valid boolean")
sub("trust-string", G, "    path: {model}", "    path: {model}\n    trustRemoteCode: 'yes'  # <",
    "spec.model.trustRemoteCode", "valid boolean")
sub("paths-string", G, "    paths: [{data}]", "    paths: {data}  # <", "spec.dataset.paths", "valid list")
sub("paths-number", G, "    paths: [{data}]", "    paths: [1]  # <", "spec.dataset.paths[0]", "quote the value")
add("targets-string", G, "  method:\n    lora: {targetModules: q_proj}  # <\n", "spec.method.lora.targetModules",
    "'all-linear'")
add("targets-numbers", G, "  method:\n    lora: {targetModules: [1, 2]}  # <\n",
    "spec.method.lora.targetModules[0]", "valid string", server="operator: InvalidSpec")
add("targets-empty", G, "  method:\n    lora: {targetModules: []}  # <\n", "spec.method.lora.targetModules",
    "at least 1 item")
add("targets-empty-name", G, "  method:\n    lora: {targetModules: ['']}  # <\n",
    "spec.method.lora.targetModules[0]", "at least 1 character", server="operator: InvalidSpec")
sub("model-string", G, "  model:\n    path: {model}", "  model: {model}  # <", "spec.model",
    "should be a mapping of fields (its fields: path, hubId")
add("method-string", G, "  method: lora  # <\n", "spec.method", "should be a mapping of fields")
add("training-list", G, "  training: [maxSteps, 5]  # <\n", "spec.training", "should be a mapping of fields")
add("micro-string", G, "  training: {microBatchSize: '4'}  # <\n", "spec.training.microBatchSize", "'auto'")
add("gpus-string", G, "  distributed: {gpusPerNode: '2'}  # <\n", "spec.distributed.gpusPerNode", "'auto'")
add("ckpt-string", G, "  training: {gradientCheckpointing: 'true'}  # <\n", "spec.training.gradientCheckpointing",
    "'auto' or input should be a valid boolean")
add("nodes-string", G, "  distributed: {nodes: '2'}  # <\n", "spec.distributed.nodes", "write the value without quotes")
add("seed-float", G, "  training: {seed: 1.5}  # <\n", "spec.training.seed", "valid integer")
add("dora-string", G, "  method:\n    lora: {useDora: 'yes'}  # <\n", "spec.method.lora.useDora", "valid boolean")
sub("final-checkpoint-string", G, "    path: {out}", "    path: {out}\n    saveFinalCheckpoint: 'no'  # <",
    "spec.output.saveFinalCheckpoint", "valid boolean")
add("secret-string", G, "  hfTokenSecretRef: hf-token  # <\n", "spec.hfTokenSecretRef", "should be a mapping of fields")
add("image-number", G, "  image: 123  # <\n", "spec.image", "quote the value")
add("cpu-number", G, "  resources: {cpu: 4}  # <\n", "spec.resources.cpu", "quote the value")
add("tolerations-map", G, "  scheduling:\n    tolerations: {key: gpu}  # <\n", "spec.scheduling.tolerations",
    "valid list")
add("node-selector-int", G, "  scheduling:\n    nodeSelector: {gpus: 8}  # <\n", "spec.scheduling.nodeSelector.gpus",
    "quote the value")

# --- ranges ------------------------------------------------------------------------------------------------------
G = "ranges"
for name, block, fld, frag in [
    ("lr-zero", "  training: {learningRate: 0}", "spec.training.learningRate", "greater than 0"),
    ("lr-negative", "  training: {learningRate: -1}", "spec.training.learningRate", "greater than 0"),
    ("lr-above-one", "  training: {learningRate: 2}", "spec.training.learningRate", "less than or equal to 1"),
    ("rank-zero", "  method:\n    lora: {rank: 0}", "spec.method.lora.rank", "greater than or equal to 1"),
    ("rank-huge", "  method:\n    lora: {rank: 5000}", "spec.method.lora.rank", "less than or equal to 4096"),
    ("alpha-zero", "  method:\n    lora: {alpha: 0}", "spec.method.lora.alpha", "greater than 0"),
    ("dropout-one", "  method:\n    lora: {dropout: 1}", "spec.method.lora.dropout", "less than 1"),
    ("maxsteps-zero", "  training: {maxSteps: 0}", "spec.training.maxSteps", "greater than or equal to 1"),
    ("epochs-zero", "  training: {epochs: 0}", "spec.training.epochs", "greater than 0"),
    ("epochs-huge", "  training: {epochs: 2000}", "spec.training.epochs", "less than or equal to 1000"),
    ("warmup-high", "  training: {warmupRatio: 0.9}", "spec.training.warmupRatio", "less than or equal to 0.5"),
    ("decay-high", "  training: {weightDecay: 2}", "spec.training.weightDecay", "less than or equal to 1"),
    ("gradnorm-negative", "  training: {maxGradNorm: -1}", "spec.training.maxGradNorm", "greater than or equal to 0"),
    ("global-zero", "  training: {globalBatchSize: 0}", "spec.training.globalBatchSize", "greater than or equal to 1"),
    ("micro-zero", "  training: {microBatchSize: 0}", "spec.training.microBatchSize", "greater than 0"),
    ("accum-negative", "  training: {gradientAccumulation: -2}", "spec.training.gradientAccumulation",
     "greater than 0"),
    ("seed-negative", "  training: {seed: -1}", "spec.training.seed", "greater than or equal to 0"),
    ("eval-zero", "  training: {evalEverySteps: 0}", "spec.training.evalEverySteps", "greater than or equal to 1"),
    ("log-zero", "  training: {logEverySteps: 0}", "spec.training.logEverySteps", "greater than or equal to 1"),
    ("nodes-zero", "  distributed: {nodes: 0}", "spec.distributed.nodes", "greater than or equal to 1"),
    ("nodes-huge", "  distributed: {nodes: 600}", "spec.distributed.nodes", "less than or equal to 512"),
    ("gpus-negative", "  distributed: {gpusPerNode: -1}", "spec.distributed.gpusPerNode", "greater than or equal to 0"),
    ("timeout-short", "  distributed: {timeoutSeconds: 5}", "spec.distributed.timeoutSeconds",
     "greater than or equal to 10"),
    ("beta-zero", "  objective: {beta: 0}", "spec.objective.beta", "greater than 0"),
    ("gate-loss-zero", "  serving:\n    gate: {maxEvalLoss: 0}", "spec.serving.gate.maxEvalLoss", "greater than 0"),
    ("gate-match-above-one", "  serving:\n    gate: {minExactMatch: 1.5}", "spec.serving.gate.minExactMatch",
     "less than or equal to 1"),
    ("beta-huge", "  objective: {beta: 20}", "spec.objective.beta", "less than or equal to 10"),
    ("fraction-zero", "  method:\n    type: spectrum\n    spectrum: {fraction: 0}", "spec.method.spectrum.fraction",
     "greater than 0"),
    ("fraction-high", "  method:\n    type: spectrum\n    spectrum: {fraction: 1.5}", "spec.method.spectrum.fraction",
     "less than or equal to 1"),
    ("image-long", "  image: " + "i" * 1100, "spec.image", "at most 1024 characters"),
]:
    add(name, G, block + "  # <\n", fld, frag)
for name, old, new, fld, frag in [
    ("maxlength-small", "    format: messages", "    format: messages\n    maxLength: 8", "spec.dataset.maxLength",
     "greater than or equal to 16"),
    ("maxlength-huge", "    format: messages", "    format: messages\n    maxLength: 200000", "spec.dataset.maxLength",
     "less than or equal to 131072"),
    ("split-zero", "    format: messages", "    format: messages\n    validationSplit: 0", "spec.dataset.validationSplit",
     "greater than 0"),
    ("split-high", "    format: messages", "    format: messages\n    validationSplit: 0.9",
     "spec.dataset.validationSplit", "less than or equal to 0.5"),
    ("paths-empty", "    paths: [{data}]", "    paths: []", "spec.dataset.paths", "at least 1 item"),
    ("paths-too-many", "    paths: [{data}]", "    paths: [" + ", ".join(["{data}"] * 65) + "]", "spec.dataset.paths",
     "at most 64 items"),
    ("save-zero", "    path: {out}", "    path: {out}\n    saveEverySteps: 0", "spec.output.saveEverySteps",
     "greater than or equal to 1"),
    ("keep-zero", "    path: {out}", "    path: {out}\n    keepLastCheckpoints: 0", "spec.output.keepLastCheckpoints",
     "greater than or equal to 1"),
    ("output-empty", "    path: {out}", "    path: ''", "spec.output.path", "at least 1 character"),
    ("revision-long", "    path: {model}", "    path: {model}\n    revision: " + "r" * 300, "spec.model.revision",
     "at most 256 characters"),
]:
    sub(name, G, old, new + "  # <", fld, frag)

# --- allowed values ---------------------------------------------------------------------------------------------
G = "allowed values"
sub("format-typo", G, "format: messages", "format: alpaka  # <", "spec.dataset.format",
    "'alpaca', 'messages', 'sharegpt', 'prompt-completion', 'text' or 'preference'")
for name, block, fld, frag in [
    ("method-typo", "  method: {type: lorax}", "spec.method.type", "'lora', 'qlora', 'full' or 'spectrum'"),
    ("objective-typo", "  objective: {type: ppo}", "spec.objective.type", "'sft', 'cpt', 'dpo' or 'orpo'"),
    ("scheduler-typo", "  training: {scheduler: cosine_with_restarts}", "spec.training.scheduler", "'cosine'"),
    ("strategy-typo", "  distributed: {strategy: zero3}", "spec.distributed.strategy", "'deepspeed-zero3'"),
    ("ckpt-sometimes", "  training: {gradientCheckpointing: sometimes}", "spec.training.gradientCheckpointing",
     "'auto'"),
    ("micro-big", "  training: {microBatchSize: big}", "spec.training.microBatchSize", "'auto'"),
    ("toleration-operator", "  scheduling:\n    tolerations:\n    - {key: gpu, operator: Maybe}",
     "spec.scheduling.tolerations[0].operator", "'Exists' or 'Equal'"),
    ("toleration-effect", "  scheduling:\n    tolerations:\n    - {key: gpu, operator: Exists, effect: NoRun}",
     "spec.scheduling.tolerations[0].effect", "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
]:
    add(name, G, block + "  # <\n", fld, frag)
for name, new, fld, frag in [
    ("dtype-typo", "    dtype: fp16", "spec.model.dtype", "'auto', 'bfloat16', 'float16' or 'float32'"),
    ("attn-typo", "    attnImplementation: flash_attention_3", "spec.model.attnImplementation", "'flash_attention_2'"),
]:
    sub(name, G, "    path: {model}", "    path: {model}\n" + new + "  # <", fld, frag)
sub("toolong-typo", G, "    format: messages", "    format: messages\n    tooLong: cut  # <", "spec.dataset.tooLong",
    "'truncate' or 'drop'")
sub("when-deleted-typo", G, "    path: {out}", "    path: run\n    volume: {create: {size: 1Gi, whenDeleted: Keep}}  # <",
    "spec.output.volume.create.whenDeleted", "'Retain' or 'Delete'")

# --- Kubernetes formats (quantities, names, labels, images) ------------------------------------------------------
G = "Kubernetes names and quantities"
for name, block, fld, frag in [
    ("memory-words", "  resources: {memory: lots}", "spec.resources.memory", "a Kubernetes quantity"),
    ("memory-negative", "  resources: {memory: -1Gi}", "spec.resources.memory", "a Kubernetes quantity"),
    ("memory-gb", "  resources: {memory: 16GB}", "spec.resources.memory", "a Kubernetes quantity"),
    ("cpu-words", "  resources: {cpu: 4 cores}", "spec.resources.cpu", "a Kubernetes quantity"),
    ("shm-words", "  resources: {sharedMemory: half}", "spec.resources.sharedMemory", "a Kubernetes quantity"),
    ("gpu-resource-bare", "  resources: {gpuResourceName: gpu}", "spec.resources.gpuResourceName",
     "an extended resource name with a domain"),
    ("priority-class", "  scheduling: {priorityClassName: High_Priority}", "spec.scheduling.priorityClassName",
     "a DNS subdomain"),
    ("node-selector-key", "  scheduling:\n    nodeSelector: {'gpu type': h100}", "spec.scheduling.nodeSelector.gpu type",
     "a label key"),
    ("toleration-key", "  scheduling:\n    tolerations:\n    - {key: 'bad key', operator: Exists}",
     "spec.scheduling.tolerations[0].key", "a label key"),
    ("toleration-seconds-negative",
     "  scheduling:\n    tolerations:\n    - {key: a, operator: Exists, effect: NoExecute, tolerationSeconds: -5}",
     "spec.scheduling.tolerations[0].tolerationSeconds", "greater than or equal to 0"),
    ("secret-name", "  hfTokenSecretRef: {name: HF_Token}", "spec.hfTokenSecretRef.name", "a DNS subdomain"),
    ("secret-key", "  hfTokenSecretRef: {name: hf, key: 'my key'}", "spec.hfTokenSecretRef.key", "a Secret key"),
    ("image-space", "  image: 'ghcr.io/org/trainer 1.0'", "spec.image", "an image reference without spaces"),
]:
    add(name, G, block + "  # <\n", fld, frag)
for name, old, new, fld, frag in [
    ("hubid-spaces", "  model:\n    path: {model}", "  model:\n    hubId: meta llama/Llama 3", "spec.model.hubId",
     "should match pattern"),
    ("hubid-three-parts", "  model:\n    path: {model}", "  model:\n    hubId: a/b/c", "spec.model.hubId",
     "should match pattern"),
    ("claim-name", "    path: {out}", "    path: run\n    volume: {claimName: My_Claim}", "spec.output.volume.claimName",
     "a DNS subdomain"),
    ("volume-size", "    path: {out}", "    path: run\n    volume: {create: {size: ten}}",
     "spec.output.volume.create.size", "should match pattern"),
    ("storage-class", "    path: {out}", "    path: run\n    volume: {create: {size: 1Gi, storageClassName: Fast SSD}}",
     "spec.output.volume.create.storageClassName", "a DNS subdomain"),
    ("nul-in-path", "    path: {out}", '    path: "out\\0put"', "spec.output.path", "a path without NUL characters"),
]:
    sub(name, G, old, new + "  # <", fld, frag)

# --- contradictions (cross-field rules) ---------------------------------------------------------------------------
G = "contradictions between fields"
sub("model-both", G, "    path: {model}", "    path: {model}  # <\n    hubId: org/m", "spec.model.path",
    "set exactly one of spec.model.path and spec.model.hubId", server="cel")
sub("model-neither", G, "    path: {model}", "    dtype: auto", "spec.model.path",
    "set exactly one of spec.model.path and spec.model.hubId", server="cel")
sub("dataset-both", G, "    paths: [{data}]", "    paths: [{data}]  # <\n    hubId: org/d", "spec.dataset.paths",
    "set exactly one of spec.dataset.paths and spec.dataset.hubId", server="cel")
sub("dataset-neither", G, "    paths: [{data}]\n", "", "spec.dataset.paths",
    "set exactly one of spec.dataset.paths and spec.dataset.hubId", server="cel")
sub("split-and-paths", G, "    format: messages", "    format: messages\n    validationSplit: 0.1\n"
    "    validationPaths: [{data}]  # <", "spec.dataset.validationPaths", "set at most one of", server="cel")
add("epochs-and-steps", G, "  training:\n    epochs: 1\n    maxSteps: 5  # <\n", "spec.training.maxSteps",
    "set at most one of spec.training.epochs and spec.training.maxSteps", server="cel")
add("lora-on-full", G, "  method:\n    type: full\n    lora: {rank: 8}  # <\n", "spec.method.lora",
    "applies only to method type lora or qlora", server="cel")
add("spectrum-on-lora", G, "  method:\n    spectrum: {fraction: 0.5}  # <\n", "spec.method.spectrum",
    "applies only to method type spectrum", server="cel")
sub("volume-both", G, "    path: {out}", "    path: run\n    volume:\n      claimName: out  # <\n"
    "      create: {size: 1Gi}", "spec.output.volume.claimName", "set exactly one of", server="cel")
sub("volume-neither", G, "    path: {out}", "    path: run\n    volume:\n      claimName: null  # <",
    "spec.output.volume.claimName", "set exactly one of", server="cel")
add("offload-ddp", G, "  distributed:\n    strategy: ddp\n    cpuOffload: true  # <\n", "spec.distributed.cpuOffload",
    "needs a sharded strategy", server="cel")
add("deepspeed-no-gpu", G, "  distributed:\n    strategy: deepspeed-zero2  # <\n    gpusPerNode: 0\n",
    "spec.distributed.strategy", "needs GPUs; gpusPerNode is 0", server="cel")
add("qlora-no-gpu", G, "  method: {type: qlora}  # <\n  distributed: {gpusPerNode: 0}\n", "spec.method.type",
    "qlora quantises the base to 4-bit", server="cel")
add("dpo-on-chat", G, "  objective: {type: dpo}  # <\n", "spec.objective.type", "trains on preference data", server="cel")
sub("preference-sft", G, "format: messages", "format: preference  # <", "spec.dataset.format",
    "format preference needs spec.objective.type dpo or orpo", server="cel")
sub("packing-preference", G, "format: messages", "format: preference\n    packing: true  # <",
    "spec.dataset.packing", "packing does not apply to preference data", server="cel")
sub("merge-on-full", G, "    path: {out}", "    path: {out}\n    mergeAdapter: true  # <\n  method: {type: full}",
    "spec.output.mergeAdapter", "mergeAdapter needs an adapter", server="cel")
add("micro-over-global", G, "  training:\n    microBatchSize: 64  # <\n    globalBatchSize: 4\n",
    "spec.training.microBatchSize", "is larger than spec.training.globalBatchSize", server="cel")
add("micro-over-default-global", G, "  training: {microBatchSize: 32}  # <\n", "spec.training.microBatchSize",
    "(default 16)", server="cel")
sub("model-subpath-up", G, "    path: {model}", "    path: m\n    volume: {claimName: models, subPath: ../other}  # <",
    "spec.model.volume.subPath", "relative path inside the volume", server="cel")
sub("data-subpath-abs", G, "    paths: [{data}]", "    paths: [d.jsonl]\n    volume: {claimName: data, subPath: /abs}  # <",
    "spec.dataset.volume.subPath", "relative path inside the volume", server="cel")
sub("output-leaves-volume", G, "    path: {out}", "    path: ../../etc/x  # <\n    volume: {claimName: out}",
    "spec.output.path", "must stay inside spec.output.volume", server="cel")
add("toleration-exists-value", G, "  scheduling:\n    tolerations:\n    - {key: gpu, operator: Exists, value: 'yes'}  # <\n",
    "spec.scheduling.tolerations[0].value", "must be empty when operator is Exists", server="cel")
add("toleration-no-key", G, "  scheduling:\n    tolerations:\n    - {operator: Equal, value: x}  # <\n",
    "spec.scheduling.tolerations[0].key", "needs operator Exists", server="cel")
add("gate-without-validation", G, "  serving:\n    gate: {maxEvalLoss: 1.5}  # <\n", "spec.serving.gate",
    "judges the end-of-run evaluation on held-out data", server="cel")
sub("gate-empty", G, "format: messages", "format: messages\n    validationSplit: 0.1\n  serving:\n    gate: {}  # <",
    "spec.serving.gate", "sets no threshold", server="cel")
sub("gate-match-on-dpo", G, "format: messages", "format: preference\n    validationSplit: 0.1\n  objective: {type: dpo}\n"
    "  serving:\n    gate: {minExactMatch: 0.5}  # <", "spec.serving.gate.minExactMatch", "needs objective sft or cpt",
    server="cel")
add("toleration-seconds", G, "  scheduling:\n    tolerations:\n    - {key: k, operator: Exists, tolerationSeconds: 5}  # <\n",
    "spec.scheduling.tolerations[0].tolerationSeconds", "needs effect NoExecute", server="cel")

# --- the launch plan on this machine ------------------------------------------------------------------------------
G = "the launch plan"
add("global-not-multiple", G, "  training:\n    microBatchSize: 3\n    globalBatchSize: 16  # <\n",
    "spec.training.globalBatchSize", "is not a multiple of microBatchSize 3", server="operator: InvalidSpec", deep=True)
add("accumulation-mismatch", G, "  training:\n    microBatchSize: 4\n    gradientAccumulation: 2\n"
    "    globalBatchSize: 16  # <\n", "spec.training.globalBatchSize", "but microBatchSize 4 x gradientAccumulation 2",
    server="operator: InvalidSpec", deep=True)
add("gpus-not-here", G, "  distributed: {gpusPerNode: 4}  # <\n", "spec.distributed.gpusPerNode",
    "this machine shows 0 GPU(s)", server="scheduler: Pending until a node has 4 GPUs", deep=True)
add("nodes-local", G, "  distributed: {nodes: 2}  # <\n", "spec.distributed.nodes", "run multi-node jobs in a cluster",
    server="accepted: a cluster runs it", deep=True)
add("qlora-cpu-here", G, "  method: {type: qlora}  # <\n", "spec.method.type", "needs a CUDA GPU",
    server="accepted: a GPU node runs it", deep=True)
sub("flash-attention-cpu", G, "    path: {model}", "    path: {model}\n    attnImplementation: flash_attention_2  # <",
    "spec.model.attnImplementation", "runs on NVIDIA GPUs only", server="accepted: a GPU node runs it", deep=True)
add("deepspeed-cpu-here", G, "  distributed: {strategy: deepspeed-zero2}  # <\n", "spec.distributed.strategy",
    "needs CUDA GPUs", server="accepted: a GPU node runs it", deep=True)

# --- the model ------------------------------------------------------------------------------------------------------
G = "the model"
add("rank-too-big", G, "  method:\n    lora: {rank: 4096}  # <\n", "spec.method.lora.rank",
    "is larger than the targeted layer", server="trainer: TrainerInputError")
add("targets-unknown", G, "  method:\n    lora: {targetModules: [q_proj, qkv_proj]}  # <\n",
    "spec.method.lora.targetModules", "['qkv_proj'] match no linear layer", server="trainer: TrainerInputError",
    deep=True)
sub("model-missing", G, "    path: {model}", "    path: no-such-model  # <", "spec.model.path", "no such directory",
    server="trainer: ModelLoadError")
sub("model-is-file", G, "    path: {model}", "    path: {data}  # <", "spec.model.path", "no such directory",
    server="trainer: ModelLoadError")
sub("model-no-config", G, "    path: {model}", "    path: empty-model  # <", "spec.model.path", "no config.json",
    server="trainer: ModelLoadError", setup="empty-model")
sub("model-bad-config", G, "    path: {model}", "    path: bad-model  # <", "spec.model.path",
    "its config.json is not JSON", server="trainer: ModelLoadError", setup="bad-model")
sub("hub-offline", G, "    path: {model}", "    hubId: org/no-such-model  # <", "spec.model.hubId", "cannot load",
    server="trainer: ModelLoadError", deep=True)
sub("template-ignores-messages", G, "    format: messages", "    format: messages\n    chatTemplate: x  # <",
    "spec.dataset.chatTemplate", "does not write the messages' content", server="trainer: TemplateProblem", deep=True)
sub("template-not-jinja", G, "    format: messages", "    format: messages\n    chatTemplate: '{% for m in messages %}'  # <",
    "spec.dataset.chatTemplate", "is not valid Jinja", server="trainer: TemplateProblem", deep=True)

# --- paths and the output folder -------------------------------------------------------------------------------------
G = "paths and the output folder"
for name, new, frag, setup in [
    ("output-root", "/", "is a root or home folder", None),
    ("output-is-model", "{model}", "is also spec.model.path", None),
    ("output-holds-data", "{dir}", "holds spec.dataset.paths[0]", None),
    ("output-under-file", "{data}/out", "is a file, not a folder, so nothing can be created under it", None),
    ("output-proc", "/proc/finetune-out", "is on a virtual filesystem (/proc)", None),
    ("output-long-name", "out/" + "n" * 300, "a file system allows at most 255 per name", None),
    ("output-foreign", "project", "holds files this trainer did not write (README.md)", "foreign-folder"),
    ("output-foreign-metrics", "old-run", "metrics.jsonl (not rows this trainer writes)", "foreign-metrics"),
    ("output-is-file", "{data}", "is a file, not a folder", None),
]:
    sub(name, G, "    path: {out}", f"    path: {new}  # <", "spec.output.path", frag,
        server="trainer: OutputPathError", setup=setup)
sub("output-tilde-user", G, "    path: {out}", "    path: ~nosuchuser/out  # <", "spec.output.path",
    "this machine has no user 'nosuchuser'", server="operator: InvalidSpec")
sub("data-missing", G, "    paths: [{data}]", "    paths: [missing.jsonl]  # <", "spec.dataset.paths[0]", "missing.jsonl: no such file",
    server="trainer: DataError")
sub("data-empty-folder", G, "    paths: [{data}]", "    paths: [empty-folder]  # <", "spec.dataset.paths[0]",
    "directory holds no *.jsonl or *.json files", server="trainer: DataError", setup="empty-folder")
sub("validation-missing", G, "    format: messages", "    format: messages\n    validationPaths: [nope.jsonl]  # <",
    "spec.dataset.validationPaths[0]", "nope.jsonl: no such file", server="trainer: DataError")
sub("cluster-output-off-volume", G, "    path: {out}", "    path: /etc/x  # <", "spec.output.path",
    "is not on a volume", server="operator: InvalidSpec", args=("--cluster",))
sub("cluster-relative-model", G, "    path: {model}", "    path: models/tiny  # <", "spec.model.path",
    "no volume is given for it", server="operator: InvalidSpec", args=("--cluster",))
