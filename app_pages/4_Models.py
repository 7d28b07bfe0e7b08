"""Models: the built-in and workspace models, where each trained one comes from (its lineage, a LoRA
adapter merged on request), a form to add one, and a prompt to try one on."""

import streamlit as st

import ui
from core import train_views
from core.llm.registry import DTYPES, ModelSpec
from core.workspace import TEST_MODELS

st.set_page_config(page_title="Models · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Models")

KINDS = {
    "hf": "Local Hugging Face folder (transformers)",
    "vllm": "Local Hugging Face folder (vLLM)",
    "openai": "OpenAI-compatible server (vllm serve, SGLang, llama.cpp, Ollama, an API)",
}

specs = ws.models()
table = ui.models_frame(specs)
# What each model is for, beside its name: the random test model must never pass for a judge.
table.insert(1, "note", ["test model (random output)" if s.name in TEST_MODELS else "" for s in specs])
st.dataframe(table, hide_index=True, width="stretch", key="models_table",
             column_config={"built-in": st.column_config.CheckboxColumn("built-in")})
st.caption("Built-in models need no download: tiny-random is a 2-layer test model with random weights (its "
           "output is noise: for trying the app, never for judging), smollm2-135m-instruct a "
           "small real instruct model (converted once, on first use). API keys are never stored: a "
           "server model names the environment variable that holds its key.")

# --------------------------------------------------------------------------------------------
# Lineage of the trained models (the lineage.json a training job wrote beside the weights)
# --------------------------------------------------------------------------------------------


def _merge(name: str) -> None:
    """Fold the adapter into its base as a new full model, registered at once, then redraw the page
    (the models table lists it). Not a callback: the spinner shows while a large model merges."""
    new_name = (st.session_state.get("models_merge_name") or "").strip() or f"{name}-merged"
    try:
        with st.spinner(f"Merging {name} into its base…"):
            spec = train_views.merge_adapter_model(ws, name, new_name)
    except (ValueError, FileNotFoundError, OSError) as exc:
        st.session_state["models_lineage_flash"] = {"ok": False, "message": str(exc)}
    else:
        st.session_state["models_lineage_flash"] = {"ok": True, "message": f"Merged {name} into {spec.name} "
                                                    f"({spec.path}): a full model vLLM can load."}
    st.rerun()


def lineage_view(trained: list[dict]) -> None:
    names = [t["name"] for t in trained]
    wanted = st.query_params.get("model")  # a link from the Train page names the model
    if st.session_state.get("models_lineage_model") not in names:
        st.session_state["models_lineage_model"] = wanted if wanted in names else names[0]
    name = st.selectbox("Trained model", names, key="models_lineage_model")
    lineage = next(t["lineage"] for t in trained if t["name"] == name)
    summary = train_views.lineage_summary(lineage)
    cols = st.columns([2, 1, 1, 1, 1])  # a base model's name is long: room for it
    cols[0].metric("Base model", summary["base model"] or "—")
    cols[1].metric("Method", summary["method"] or "—")
    cols[2].metric("Steps", f"{summary['steps']:,}" if summary["steps"] is not None else "—")
    cols[3].metric("First loss", "—" if summary["first loss"] is None else f"{summary['first loss']:.4f}")
    cols[4].metric("Final loss", "—" if summary["final loss"] is None else f"{summary['final loss']:.4f}")
    st.text(f"Snapshot: {summary['snapshot']} (content hash {summary['snapshot hash']})")
    st.text(f"Round {summary['round']} · training job {summary['training job']} · trained at {summary['trained at']}"
            + (f" · merged from the adapter {summary['merged from']}" if summary["merged from"] else ""))
    if summary["training job"]:
        st.page_link("app_pages/10_Train.py", label="Open its training run (curves, settings, log)",
                     icon=":material/model_training:", query_params={"job": summary["training job"]})
    with st.expander("Trainer config"):
        st.dataframe(train_views.config_frame(lineage.get("train_config")), hide_index=True,
                     key="models_lineage_config")
    if train_views.is_adapter(ws, name):
        st.caption("A LoRA adapter: the hf backend loads it on its base through peft. vLLM (or a next "
                   "training run) needs a merged full model.")
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.text_input("Name of the merged model", key="models_merge_name", placeholder=f"{name}-merged")
        if right.button("Merge adapter", key="models_merge"):
            _merge(name)
    flash = st.session_state.pop("models_lineage_flash", None)
    if flash:
        (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))


trained_models = train_views.trained_models(ws)
st.subheader("Trained models")
if trained_models:
    lineage_view(trained_models)
else:
    st.text("No trained model yet: a run on the Train page registers its model here, with where it came from.")

# --------------------------------------------------------------------------------------------
# Add a model
# --------------------------------------------------------------------------------------------


def _add_model() -> None:
    """Form callback: build the spec, register it, and leave a message for the page."""
    get = st.session_state.get
    backend = get("models_kind", "hf")
    context = get("models_context")
    fields = {"name": (get("models_name") or "").strip(), "backend": backend,
              "context_length": int(context) if context else None, "dtype": get("models_dtype", "auto")}
    if backend == "openai":
        fields |= {"base_urls": [u.strip() for u in (get("models_urls") or "").splitlines() if u.strip()],
                   "model": (get("models_model_id") or "").strip() or None,
                   "api_key_env": (get("models_key_env") or "").strip() or None}
    else:
        fields |= {"path": (get("models_path") or "").strip() or None,
                   "trust_remote_code": bool(get("models_trust_code"))}
    try:
        spec = ws.add_model(ModelSpec.from_dict(fields))
    except (ValueError, FileNotFoundError) as exc:
        st.session_state["models_flash"] = {"ok": False, "message": str(exc)}
    else:
        st.session_state["models_flash"] = {"ok": True, "message": f"Added {spec.name} ({spec.backend})."
                                            + (f" Warning: {spec.warning}." if spec.warning else "")}
        for key in ("models_name", "models_path", "models_urls", "models_model_id", "models_key_env"):
            st.session_state[key] = ""


st.subheader("Add a model")
kind = st.radio("Kind", list(KINDS), format_func=KINDS.get, key="models_kind")
with st.form("models_add_form", border=True):
    left, right = st.columns(2)
    with left:
        st.text_input("Name", key="models_name", placeholder="my-model",
                      help="1–80 letters, digits, '.', '_' or '-'; used in jobs and judgments.")
        if kind == "openai":
            st.text_area("Base URLs (one per line)", key="models_urls", height=80,
                         placeholder="http://127.0.0.1:8000/v1",
                         help="Requests are spread across the servers.")
            st.text_input("Model id on the server", key="models_model_id", placeholder="Qwen/Qwen2.5-7B-Instruct")
            st.text_input("API key environment variable (its NAME, not the key)", key="models_key_env",
                          placeholder="OPENAI_API_KEY",
                          help="Leave empty for servers without a key. The key itself is never stored.")
        else:
            st.text_input("Model folder", key="models_path", placeholder="/models/Qwen2.5-0.5B-Instruct",
                          help="A local Hugging Face folder with config.json and *.safetensors weights.")
    with right:
        st.number_input("Context length (empty: from the model)", min_value=16, value=None, step=512,
                        key="models_context")
        st.selectbox("dtype", DTYPES, key="models_dtype")
        if kind != "openai":
            st.checkbox("Trust the folder's own code (trust_remote_code)", key="models_trust_code",
                        help="Off unless you have read the Python files the folder's auto_map names: loading the "
                             "model runs them with your permissions. A folder with an auto_map is refused without it.")
    st.form_submit_button("Add model", type="primary", on_click=_add_model, key="models_add")

flash = st.session_state.pop("models_flash", None)
if flash:
    if flash["ok"]:
        st.success(ui.md_escape(flash["message"]))
    else:
        st.error(ui.md_escape(flash["message"]))

user_models = [s.name for s in specs if not s.is_builtin]
if user_models:
    with st.expander("Remove a workspace model"):
        doomed = st.selectbox("Model", user_models, key="models_remove_name")
        if st.button("Remove", key="models_remove"):
            try:
                ws.remove_model(doomed)
            except ValueError as exc:
                st.error(ui.md_escape(exc))
            else:
                st.rerun()

# --------------------------------------------------------------------------------------------
# Try a prompt
# --------------------------------------------------------------------------------------------

st.subheader("Try a prompt")
names = sorted((s.name for s in specs), key=lambda n: n in TEST_MODELS)  # the test model last
left, right = st.columns([3, 1])
with left:
    name = st.selectbox("Model", names, index=names.index(ui.default_model(names)), key="models_try_model",
                        format_func=ui.model_label)
    prompt = st.text_area("Prompt", key="models_try_prompt", height=120,
                          placeholder="Explain what a hash table is in two sentences.")
    system = st.text_input("System prompt (optional)", key="models_try_system")
with right:
    max_tokens = st.number_input("Max tokens", min_value=1, max_value=8192, value=128, step=32,
                                 key="models_try_max_tokens")
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, key="models_try_temperature",
                            help="0 decodes greedily.")
    seed = st.number_input("Seed (optional)", min_value=0, value=None, step=1, key="models_try_seed")

if st.button("Generate", key="models_try_generate", type="primary", disabled=not name):
    if not (prompt or "").strip():
        st.error("Type a prompt first.")
    else:
        spec = ws.model(name)
        try:
            with st.spinner(f"Loading {name} (the first load of a built-in model converts or builds it, "
                            "which can take a while)…"):
                backend = ui.loaded_backend(spec)
            with st.spinner(f"{name} is answering…"):
                result = ui.try_prompt(backend, prompt, system, int(max_tokens), float(temperature),
                                       None if seed is None else int(seed))
        except Exception as exc:  # a missing folder, an unreachable server, a bad template: show it
            st.session_state.pop("models_try_result", None)
            st.error(ui.md_escape(f"{name}: {type(exc).__name__}: {exc}"))
        else:
            st.session_state["models_try_result"] = result | {"model": name, "prompt": prompt}

result = st.session_state.get("models_try_result")
if result:
    st.text(f"{result['model']} answered:")
    ui.show_text(result["text"], height=400)
    cols = st.columns(4)
    cols[0].metric("Tokens", f"{result['n_tokens']:,}", help=f"prompt: {result['n_prompt_tokens']:,} tokens")
    cols[1].metric("Time", f"{result['seconds']:.2f} s")
    cols[2].metric("Tokens/s", f"{result['tokens_per_s']:.1f}" if result["tokens_per_s"] else "—")
    cols[3].metric("Finish", result["finish_reason"])
    if result["error"]:
        st.warning(ui.md_escape(result["error"]))
