"""Append-only list of named schema migrations.

Each migration is a name and a list of DDL statements. `core.store.Store.migrate` applies the
ones not yet recorded in `schema_migrations`, each in its own transaction. Never edit or
reorder a migration that has shipped: add a new one. Tests build a blank database and a
database stopped at every earlier migration, and check both reach the same schema.

The DDL lives here (not in store.py) because it is data about the schema's history, not a
query; store.py remains the only module that talks to DuckDB.
"""

from __future__ import annotations

# The sample tables (instructions, responses, documents, preference_pairs) have no PRIMARY KEY:
# DuckDB maintains an ART index per key, which made a 1M-row import 4-5x slower. Ids are unique
# because the single writer inserts with an anti-join on id (see core/store/ INSERT_*).
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_initial",
        [
            """
            CREATE TABLE datasets (
                id          VARCHAR PRIMARY KEY,   -- content hash of the name
                name        VARCHAR NOT NULL UNIQUE,
                kind        VARCHAR NOT NULL,      -- pairs | prompts | preference | corpus | mixed
                description VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE imports (
                id                VARCHAR PRIMARY KEY,
                dataset_id        VARCHAR NOT NULL,
                source_file       VARCHAR NOT NULL,
                file_sha256       VARCHAR NOT NULL,
                format            VARCHAR NOT NULL,
                n_records         INTEGER NOT NULL,
                n_new             INTEGER NOT NULL,   -- new instructions or documents
                n_new_responses   INTEGER NOT NULL,
                n_duplicates      INTEGER NOT NULL,
                n_rejected        INTEGER NOT NULL,
                created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE instructions (
                id          VARCHAR NOT NULL,      -- hash(dataset, system, history, text, input); unique
                dataset_id  VARCHAR NOT NULL,
                text        VARCHAR NOT NULL,
                input       VARCHAR NOT NULL DEFAULT '',
                system      VARCHAR,
                history     JSON,                  -- earlier chat turns for multi-turn samples
                task        VARCHAR,
                category    VARCHAR,
                n_chars     INTEGER NOT NULL,
                source_file VARCHAR,
                source_line INTEGER,
                round       INTEGER NOT NULL DEFAULT 0,
                method      VARCHAR NOT NULL DEFAULT 'import',
                model       VARCHAR,
                parent_id   VARCHAR,
                meta        JSON,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE responses (
                id             VARCHAR NOT NULL,      -- hash(instruction, role, model, text); unique
                instruction_id VARCHAR NOT NULL,
                role           VARCHAR NOT NULL,      -- seed | teacher | student | revision | chosen | rejected | ...
                text           VARCHAR NOT NULL,
                n_chars        INTEGER NOT NULL,
                model          VARCHAR,
                source_file    VARCHAR,
                source_line    INTEGER,
                round          INTEGER NOT NULL DEFAULT 0,
                method         VARCHAR NOT NULL DEFAULT 'import',
                parent_id      VARCHAR,
                template_hash  VARCHAR,
                params         JSON,
                meta           JSON,
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE preference_pairs (
                id             VARCHAR NOT NULL,      -- hash(chosen, rejected); unique
                instruction_id VARCHAR NOT NULL,
                chosen_id      VARCHAR NOT NULL,
                rejected_id    VARCHAR NOT NULL,
                source_file    VARCHAR,
                source_line    INTEGER,
                round          INTEGER NOT NULL DEFAULT 0,
                method         VARCHAR NOT NULL DEFAULT 'import',
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE documents (
                id          VARCHAR NOT NULL,      -- hash(dataset, normalised text); unique
                dataset_id  VARCHAR NOT NULL,
                text        VARCHAR NOT NULL,
                title       VARCHAR,
                n_chars     INTEGER NOT NULL,
                source_file VARCHAR,
                source_line INTEGER,
                segment     INTEGER,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE judgments (
                id            VARCHAR PRIMARY KEY,
                target_kind   VARCHAR NOT NULL,    -- response | pair | list
                target_id     VARCHAR NOT NULL,
                judge_model   VARCHAR NOT NULL,
                rubric        VARCHAR NOT NULL,
                kind          VARCHAR NOT NULL,    -- pointwise | pairwise | listwise
                score         DOUBLE,              -- NULL when the verdict did not parse, never 0
                scale_max     INTEGER,
                raw           VARCHAR NOT NULL,
                parse_error   VARCHAR,
                rationale     VARCHAR,
                round         INTEGER NOT NULL DEFAULT 0,
                template_hash VARCHAR,
                params        JSON,
                created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE reviews (
                id          VARCHAR PRIMARY KEY,
                target_kind VARCHAR NOT NULL CHECK (target_kind IN ('instruction', 'response', 'document')),
                target_id   VARCHAR NOT NULL,
                decision    VARCHAR CHECK (decision IN ('accept', 'reject')),
                edited_text VARCHAR,
                note        VARCHAR,
                reviewer    VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE import_rejects (
                id          VARCHAR PRIMARY KEY,
                import_id   VARCHAR NOT NULL,
                dataset_id  VARCHAR NOT NULL,
                source_file VARCHAR NOT NULL,
                line        INTEGER,
                reason      VARCHAR NOT NULL,
                excerpt     VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0002_review_views",
        [
            # The current human verdict on each target is its latest decision; edits likewise.
            """
            CREATE VIEW target_decisions AS
            SELECT target_id, arg_max(decision, created_at) AS decision
            FROM reviews WHERE decision IS NOT NULL GROUP BY target_id
            """,
            """
            CREATE VIEW latest_edits AS
            SELECT target_id, arg_max(edited_text, created_at) AS edited_text
            FROM reviews WHERE edited_text IS NOT NULL GROUP BY target_id
            """,
            # An instruction's verdict is the latest decision on it or on any of its responses.
            """
            CREATE VIEW instruction_decisions AS
            SELECT coalesce(res.instruction_id, v.target_id) AS instruction_id,
                   arg_max(v.decision, v.created_at) AS decision
            FROM reviews v LEFT JOIN responses res ON res.id = v.target_id
            WHERE v.decision IS NOT NULL AND v.target_kind IN ('instruction', 'response')
            GROUP BY ALL
            """,
        ],
    ),
    (
        "0003_lookup_indexes",
        [
            # One ART index, for the responses of a page of instructions (Explore) and of one sample:
            # 0.5 ms instead of ~45 ms at 1M responses, for ~0.9 s more per 1M-row import.
            "CREATE INDEX responses_by_instruction ON responses (instruction_id)",
            "CREATE INDEX reviews_by_target ON reviews (target_id)",
            "CREATE INDEX judgments_by_target ON judgments (target_id)",
        ],
    ),
    (
        "0004_models",
        [
            # User model specs (core.llm.registry.ModelSpec as JSON); built-ins are not stored.
            """
            CREATE TABLE models (
                name       VARCHAR PRIMARY KEY,
                spec       JSON NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0005_embeddings",
        [
            # Sentence embeddings cached by text hash (core.embed). No PRIMARY KEY (see above):
            # the single writer inserts with an anti-join on (text_hash, model).
            """
            CREATE TABLE embeddings (
                text_hash  VARCHAR NOT NULL,
                model      VARCHAR NOT NULL,
                vector     FLOAT[384] NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0006_jobs",
        [
            """
            CREATE TABLE jobs (
                id         VARCHAR PRIMARY KEY,
                kind       VARCHAR NOT NULL,        -- generate | judge | ...
                dir        VARCHAR NOT NULL,
                model      VARCHAR,
                config     JSON,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            # A shard's rows and its row here are written in one transaction: never ingested twice.
            """
            CREATE TABLE job_shards (
                job_id      VARCHAR NOT NULL,
                shard       VARCHAR NOT NULL,
                sha256      VARCHAR NOT NULL,
                n_rows      INTEGER NOT NULL,
                n_new       INTEGER NOT NULL,
                ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (job_id, shard)
            )
            """,
        ],
    ),
    (
        "0007_review_instruction",
        [
            # Each review names the instruction it is about (itself, or its response's), so the
            # Explore page reads a page's verdicts from the small reviews table alone instead of
            # joining every response (3-4 ms per page at 1M responses).
            "ALTER TABLE reviews ADD COLUMN instruction_id VARCHAR",
            """
            UPDATE reviews SET instruction_id = coalesce(
                (SELECT r.instruction_id FROM responses r WHERE r.id = reviews.target_id),
                CASE WHEN target_kind = 'instruction' THEN target_id END)
            """,
        ],
    ),
    (
        "0008_verdicts_labels_difficulty_snapshots",
        [
            # Judge scoring modes (DESIGN.md §6): 'generate' (reason, then a score line, parsed) or
            # 'probability' (the expected score over the score tokens' next-token distribution);
            # confidence is the probability mass that fell on the score tokens. A backend failure
            # (prompt too long, server error) is a failed call, not a parse failure: call_error.
            "ALTER TABLE judgments ADD COLUMN mode VARCHAR",
            "ALTER TABLE judgments ADD COLUMN confidence DOUBLE",
            "ALTER TABLE judgments ADD COLUMN call_error VARCHAR",
            # Model-made and human labels (task, category). An imported label stays in
            # instructions.task as it came; this table holds the others, each with its classifier.
            """
            CREATE TABLE labels (
                id          VARCHAR PRIMARY KEY,   -- hash(target, kind, value, classifier, job)
                target_id   VARCHAR NOT NULL,      -- instruction id
                kind        VARCHAR NOT NULL,      -- task | category
                value       VARCHAR NOT NULL,
                classifier  VARCHAR NOT NULL,      -- human | embed:<model> | llm:<model>
                confidence  DOUBLE,
                job_id      VARCHAR,
                reviewer    VARCHAR,
                meta        JSON,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            "CREATE INDEX labels_by_target ON labels (target_id)",
            # The current task of an instruction: a human's latest relabel, else the imported
            # label, else the latest model label.
            """
            CREATE VIEW current_tasks AS
            WITH human AS (
                SELECT target_id, arg_max(value, created_at) AS value
                FROM labels WHERE kind = 'task' AND classifier = 'human' GROUP BY target_id
            ), model AS (
                SELECT target_id, arg_max(value, created_at) AS value, arg_max(classifier, created_at) AS classifier,
                       arg_max(confidence, created_at) AS confidence
                FROM labels WHERE kind = 'task' AND classifier <> 'human' GROUP BY target_id
            )
            SELECT i.id AS instruction_id,
                   coalesce(h.value, i.task, m.value) AS task,
                   CASE WHEN h.value IS NOT NULL THEN 'human' WHEN i.task IS NOT NULL THEN 'import'
                        WHEN m.value IS NOT NULL THEN m.classifier END AS source,
                   CASE WHEN h.value IS NULL AND i.task IS NULL THEN m.confidence END AS confidence
            FROM instructions i LEFT JOIN human h ON h.target_id = i.id LEFT JOIN model m ON m.target_id = i.id
            """,
            # Per-workspace settings as JSON values (the task taxonomy, …).
            """
            CREATE TABLE settings (
                key        VARCHAR PRIMARY KEY,
                value      JSON NOT NULL,
                updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            # Difficulty per instruction and round (core.difficulty). metric 'mfd': TAPIR's
            # judge(teacher) - judge(student) from one judge's stored verdicts; 'ifd': the
            # instruction-following difficulty from a scoring model. value is NULL, with the reason
            # in `missing`, when an input is absent. Recomputing replaces the row (same id).
            """
            CREATE TABLE difficulty (
                id                  VARCHAR PRIMARY KEY,  -- hash(instruction, round, metric, source)
                instruction_id      VARCHAR NOT NULL,
                round               INTEGER NOT NULL DEFAULT 0,
                metric              VARCHAR NOT NULL,     -- mfd | ifd
                source              VARCHAR NOT NULL,     -- mfd: judge model/rubric; ifd: scoring model/role
                value               DOUBLE,
                teacher_response_id VARCHAR,
                student_response_id VARCHAR,
                teacher_score       DOUBLE,
                student_score       DOUBLE,
                missing             VARCHAR,
                meta                JSON,
                created_at          TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            "CREATE INDEX difficulty_by_instruction ON difficulty (instruction_id)",
            # Curation snapshots (core.curate): named, immutable sets of samples. The members are
            # materialised once, so later changes to scores or reviews never change a snapshot.
            """
            CREATE TABLE snapshots (
                name          VARCHAR PRIMARY KEY,
                content_hash  VARCHAR NOT NULL,
                spec          JSON NOT NULL,
                n_members     INTEGER NOT NULL,
                n_instructions INTEGER NOT NULL,
                parquet_path  VARCHAR,
                stats         JSON,
                created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE snapshot_members (
                snapshot       VARCHAR NOT NULL,
                position       INTEGER NOT NULL,   -- order in the training file
                instruction_id VARCHAR NOT NULL,
                response_id    VARCHAR,            -- NULL for prompt-only snapshots
                task           VARCHAR,
                weight         DOUBLE NOT NULL DEFAULT 1.0,
                system_tag     VARCHAR,
                copy           INTEGER NOT NULL DEFAULT 0   -- >0: an up-sampled repeat
            )
            """,
            "CREATE INDEX snapshot_members_by_snapshot ON snapshot_members (snapshot)",
        ],
    ),
    (
        "0009_pair_reviews",
        [
            # The review queue labels preference pairs too (accept the pair, reject it, or call it
            # a tie), and records where a review was made. DuckDB cannot change a CHECK constraint
            # in place, so the table is rebuilt; its rows and their order are kept.
            "DROP INDEX IF EXISTS reviews_by_target",
            "ALTER TABLE reviews RENAME TO reviews_0008",
            """
            CREATE TABLE reviews (
                id             VARCHAR PRIMARY KEY,
                target_kind    VARCHAR NOT NULL
                               CHECK (target_kind IN ('instruction', 'response', 'document', 'pair')),
                target_id      VARCHAR NOT NULL,
                decision       VARCHAR CHECK (decision IN ('accept', 'reject', 'tie')),
                edited_text    VARCHAR,
                note           VARCHAR,
                reviewer       VARCHAR,
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
                instruction_id VARCHAR,
                source         VARCHAR,          -- explore | queue:<source> | cli | …
                CHECK (decision IS DISTINCT FROM 'tie' OR target_kind = 'pair')
            )
            """,
            """
            INSERT INTO reviews (id, target_kind, target_id, decision, edited_text, note, reviewer, created_at,
                                 instruction_id)
            SELECT id, target_kind, target_id, decision, edited_text, note, reviewer, created_at, instruction_id
            FROM reviews_0008 ORDER BY rowid
            """,
            "DROP TABLE reviews_0008",
            "CREATE INDEX reviews_by_target ON reviews (target_id)",
        ],
    ),
    (
        "0010_evaluations",
        [
            # One evaluation (core.evaluate) per (model pair, prompt dataset, judge, rubric, round):
            # model A's answers against model B's, judged pairwise in both orders. Counts are for A
            # (a pair's verdict is the mean of its two orders); ties are counted apart, so the win
            # rate is wins / n with a Wilson interval. Recomputing replaces the row (same id). A few rows per
            # round: no index.
            """
            CREATE TABLE evaluations (
                id               VARCHAR PRIMARY KEY,  -- hash(model_a, model_b, prompts, judge, rubric, round)
                model_a          VARCHAR NOT NULL,
                model_b          VARCHAR NOT NULL,
                prompts          VARCHAR NOT NULL,     -- the prompt dataset's name
                round            INTEGER NOT NULL DEFAULT 0,
                judge            VARCHAR NOT NULL,
                rubric           VARCHAR NOT NULL,     -- a pairwise rubric
                n_prompts        INTEGER NOT NULL,     -- prompts evaluated (after the limit)
                n                INTEGER NOT NULL,     -- pairs with a verdict
                wins             INTEGER NOT NULL,
                ties             INTEGER NOT NULL,
                losses           INTEGER NOT NULL,
                n_both_orders    INTEGER NOT NULL,     -- pairs with a verdict in both orders
                flips            INTEGER NOT NULL,     -- of those, the verdict changed side with the order
                win_rate         DOUBLE,               -- wins / n; NULL when n = 0
                win_low          DOUBLE,
                win_high         DOUBLE,
                flip_rate        DOUBLE,
                pointwise_rubric VARCHAR,              -- the optional pointwise judge's rubric
                score_a          DOUBLE,               -- its mean score of each model's answers
                score_b          DOUBLE,
                n_reference      INTEGER NOT NULL DEFAULT 0,  -- prompts with a reference answer
                exact_a          INTEGER,              -- answers equal to the reference (stripped)
                exact_b          INTEGER,
                config           JSON NOT NULL,
                jobs             JSON NOT NULL,        -- the job ids that produced the inputs
                meta             JSON,                 -- unanswered prompts, scored answers, …
                created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0011_rounds",
        [
            # Rounds (core.rounds, DESIGN.md §8). A run is one recipe's sequence of rounds; a round
            # starts from a student model and ends with the model it trained and its metrics; its
            # steps are the durable record the driver replays: a step that is done returns its
            # stored outputs, a step whose job runs is waited on, so a killed driver continues
            # where it stopped and no step runs twice.
            """
            CREATE TABLE round_runs (
                name        VARCHAR PRIMARY KEY,   -- the recipe's name (one run per name)
                method      VARCHAR NOT NULL,      -- tapir | ...
                recipe      JSON NOT NULL,         -- the validated recipe
                source      VARCHAR,               -- the recipe file it was read from
                rounds      INTEGER NOT NULL,      -- rounds wanted
                status      VARCHAR NOT NULL,      -- active | paused | done | failed
                error       VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
                updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            """
            CREATE TABLE rounds (
                id          VARCHAR PRIMARY KEY,   -- <run>/<number>
                run         VARCHAR NOT NULL,
                number      INTEGER NOT NULL,      -- 1, 2, ...
                parent_id   VARCHAR,               -- the round before (NULL for the first)
                student     VARCHAR NOT NULL,      -- the model the round starts from
                model       VARCHAR,               -- the model it trained
                snapshot    VARCHAR,               -- the training snapshot
                status      VARCHAR NOT NULL,      -- running | done | failed
                config      JSON NOT NULL,         -- the recipe values this round used (alpha, ...)
                metrics     JSON,
                error       VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
                finished_at TIMESTAMP,
                UNIQUE (run, number)
            )
            """,
            """
            CREATE TABLE round_steps (
                round_id    VARCHAR NOT NULL,
                name        VARCHAR NOT NULL,
                position    INTEGER NOT NULL,      -- the order the round reached it in
                kind        VARCHAR NOT NULL,      -- job | train | compute
                status      VARCHAR NOT NULL,      -- running | done | failed
                job_id      VARCHAR,
                outputs     JSON,
                error       VARCHAR,
                started_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
                finished_at TIMESTAMP,
                PRIMARY KEY (round_id, name)
            )
            """,
        ],
    ),
    (
        "0012_pair_feedback",
        [
            # Zephyr's AI feedback (core.feedback): one row per preference pair binarisation wrote:
            # which judge, rubric and template rated it, both sides' means, the margin, the
            # per-aspect ratings with the judgment ids that hold their rationales, the seed and the
            # params (pool roles, min_margin) of the draw. preference_pairs stays as imports write it.
            """
            CREATE TABLE pair_feedback (
                pair_id        VARCHAR PRIMARY KEY,   -- preference_pairs.id
                judge_model    VARCHAR NOT NULL,
                rubric         VARCHAR NOT NULL,      -- zephyr_aspects (its rows: zephyr_aspects.<aspect>)
                template_hash  VARCHAR NOT NULL,      -- of the judge prompt the ratings came from
                chosen_score   DOUBLE NOT NULL,       -- mean of the chosen answer's aspect scores
                rejected_score DOUBLE NOT NULL,
                margin         DOUBLE NOT NULL,       -- chosen_score - rejected_score, > 0
                ratings        JSON NOT NULL,         -- {chosen|rejected: {response_id, score, aspects: {a: {score, judgments}}}}
                seed           BIGINT NOT NULL,       -- the draw of the rejected answer
                params         JSON,                  -- {roles, min_margin}
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0013_rankings",
        [
            # Tuna's rankings (core.ranking): one row per ranked instruction. response_ids is best
            # first; scores are aligned with it (probabilistic: mean token log-probs; contextual: NULL
            # or the judge's own values). A contextual ranking that did not parse has NULL
            # response_ids, its raw text and the parse error.
            """
            CREATE TABLE rankings (
                id             VARCHAR NOT NULL,      -- hash(method, instruction, role, model, judge, round, ranked ids)
                instruction_id VARCHAR NOT NULL,
                method         VARCHAR NOT NULL,      -- probabilistic | contextual
                role           VARCHAR NOT NULL,      -- the ranked answers' role
                model          VARCHAR NOT NULL,      -- the ranked answers' model
                judge          VARCHAR,               -- contextual: the judge model; probabilistic: NULL
                template_hash  VARCHAR,               -- contextual: the judge prompt
                response_ids   JSON,                  -- best first; NULL when a contextual ranking is invalid
                scores         JSON,                  -- aligned with response_ids
                raw            VARCHAR,               -- contextual: the judge's raw output
                parse_error    VARCHAR,
                round          INTEGER NOT NULL DEFAULT 0,
                params         JSON,
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            "CREATE INDEX rankings_instruction ON rankings (instruction_id)",
        ],
    ),
    (
        "0014_corpus_drops",
        [
            # Corpus passages the importer dropped (core.corpus), each with its reason: too_short,
            # too_long, duplicate, heading_caps (a heading mostly in capitals) or chrome
            # (navigation, footers); ids are content hashes, so a re-import records nothing twice.
            """
            CREATE TABLE corpus_drops (
                id          VARCHAR PRIMARY KEY,
                dataset_id  VARCHAR NOT NULL,
                source_file VARCHAR NOT NULL,
                source_line INTEGER,
                segment     INTEGER,
                title       VARCHAR,
                reason      VARCHAR NOT NULL,   -- too_short | too_long | duplicate | heading_caps | chrome
                n_chars     INTEGER NOT NULL,
                excerpt     VARCHAR,
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
    (
        "0015_categories",               # CITING: categories, members, proposals (revisions are responses)
        [
            # CITING's categories (core.categories), grouped by scheme (a round run's name, or one a user
            # makes): name, description and evaluation criteria (a JSON list of strings), where the
            # category came from (teacher | recipe | human; an edit makes it human), and example texts
            # (a recipe's seeds, which need not be instructions of the workspace). The id is fixed at
            # creation, so a rename keeps the members and the revisions' lineage.
            """
            CREATE TABLE categories (
                id          VARCHAR PRIMARY KEY,   -- hash(scheme, name first given)
                scheme      VARCHAR NOT NULL,
                name        VARCHAR NOT NULL,
                description VARCHAR NOT NULL DEFAULT '',
                criteria    JSON NOT NULL,         -- ["criterion", ...]
                examples    JSON,                  -- ["example instruction", ...] (seed texts)
                origin      VARCHAR NOT NULL,      -- teacher | recipe | human
                proposal_id VARCHAR,               -- category_proposals.id when the teacher wrote it
                created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
                updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
            # One category per instruction and scheme: seed members (the teacher put them there, or
            # their text is a recipe example) and assigned ones (the highest mean inner product of its
            # embedding with the seeds'), with that similarity.
            """
            CREATE TABLE category_members (
                scheme         VARCHAR NOT NULL,
                instruction_id VARCHAR NOT NULL,
                category_id    VARCHAR NOT NULL,
                similarity     DOUBLE,             -- mean inner product with the category's seed vectors
                source         VARCHAR NOT NULL,   -- seed | assigned
                round          INTEGER NOT NULL DEFAULT 0,
                created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (scheme, instruction_id)
            )
            """,
            # The teacher's proposals, kept whole: the raw reply, the parsed categories or NULL with
            # the parse error, or the backend's call error; the sample of instructions it was shown.
            """
            CREATE TABLE category_proposals (
                id            VARCHAR PRIMARY KEY,
                scheme        VARCHAR NOT NULL,
                model         VARCHAR NOT NULL,
                job_id        VARCHAR,
                round         INTEGER NOT NULL DEFAULT 0,
                sample_ids    JSON NOT NULL,       -- the instructions shown, numbered 1.. in this order
                raw           VARCHAR NOT NULL,
                parsed        JSON,                -- [{name, description, criteria, members}] or NULL
                parse_error   VARCHAR,
                call_error    VARCHAR,
                template_hash VARCHAR,
                params        JSON,
                created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
            )
            """,
        ],
    ),
]
