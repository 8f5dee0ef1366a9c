"""Command line: ``python -m arena [serve flags]`` starts the app; subcommands do the rest.

    python -m arena                       start the arena page (see --help)
    python -m arena models prepare        assemble and verify the embedded model files
    python -m arena leaderboard           print the Bradley-Terry leaderboard (--source human|judge)
    python -m arena batch --models A,B    every preset through every model, judged, with a report
    python -m arena judge FILE.jsonl      judge a FastChat-format battle file (agreement with its votes)
    python -m arena report RUN_ID         write a batch run's report (HTML + Markdown)
    python -m arena quality --models A,B  what INT4 costs: KL divergence to a full-precision reference
    python -m arena grader-check          grader models against labelled answers: per-language threshold, margin
    python -m arena export --format csv   write votes (csv) or battles (jsonl)
    python -m arena import FILE.jsonl     merge battles from another arena or a FastChat log
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arena.app import add_common_flags, serve
from arena.core.config import ConfigError, load_models, load_prompts
from arena.storage.store import open_store


def _prepare(args: argparse.Namespace) -> int:
    from arena.serving.sources import SourceError, missing_packages, resolve

    failed = 0
    for model in load_models(args.models):
        if model.source is None:
            continue
        if model.install and missing_packages(model):
            print(f"skipped {model.id}: optional, not installed (run {model.install})")
            continue
        try:
            path = resolve(model, Path(args.data_dir))
            print(f"ok      {model.id}: {path}")
        except SourceError as exc:
            failed += 1
            print(f"FAILED  {model.id}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _leaderboard(args: argparse.Namespace) -> int:
    from arena.core import topics
    from arena.ratings import leaderboard
    from arena.rounds.rules import mark_retired, retired_models
    catalog = load_models(args.models)
    store = open_store(args)
    topics.backfill(store, load_prompts(args.prompts))
    names = mark_retired({m.id: m.name for m in catalog}, retired_models(catalog, store), "(retired)")
    if args.source == "judge":
        table, _ = leaderboard.judge_table(store, names, args.judge, args.bootstrap, args.seed)
        if table.empty:
            print("No judge verdicts yet (python -m arena batch … or python -m arena judge FILE.jsonl).")
        else:
            print("Automatic judge verdicts (both orders; not human votes):")
            print(table.drop(columns=["ci_low", "ci_high", "mean_tokens_per_s", "mean_ttft_s"]).to_string(index=False))
        return 0
    board = leaderboard.board(store, names, args.bootstrap, args.seed, not args.exclude_imported, args.category,
                              args.language)
    selection = ", ".join(f"{k} {v}" for k, v in (("category", args.category), ("language", args.language)) if v)
    where = f" ({selection})" if selection else ""
    if board.battles == 0:
        print(f"No rated (blind) battles{where} yet.")
    elif not board.enough:
        print(f"Only {board.battles} rated battle(s){where}: ratings need at least {leaderboard.MIN_BATTLES}, so none "
              f"are shown.")
    else:
        print(f"{board.battles} rated battles{where}.\n")
        print(board.table.drop(columns=["ci_low", "ci_high"]).to_string(index=False))
        print("\nWith style control (FastChat's method: length in characters, headers, list items, bold):")
        print(board.style.to_string(index=False))
        print("\nStyle coefficients (log-odds and rating points per standard deviation, 95% CI):")
        print(board.coefficients.to_string(index=False))
    if not board.named.empty:
        print("\nNamed votes (not rated):")
        print(board.named.to_string(index=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    from arena.rounds.rules import retired_models
    from arena.storage import exports
    store = open_store(args)
    records = store.voted_rounds()
    out = args.output or Path(f"arena-{'votes' if args.format == 'csv' else 'battles'}.{args.format}")
    (exports.write_csv if args.format == "csv" else exports.write_jsonl)(
        records, out, retired_models(load_models(args.models), store))
    print(f"wrote {len(records)} vote(s) to {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from arena.storage import exports
    try:
        catalog = {m.id: m for m in load_models(args.models)}
        added, skipped = exports.import_battles(open_store(args), args.file,
                                                trust=args.trust_import, catalog=catalog,
                                                max_bytes=int(args.max_upload_mb * 1e6),
                                                prompts=load_prompts(args.prompts))
    except exports.ImportError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rated = "blind ones rated unless an answer names a model" if args.trust_import else \
        "shown but not rated; pass --trust-import to rate blind ones"
    print(f"imported {added} battle(s) ({rated}); {skipped} already stored")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from arena.batch.cli import (
        add_batch_commands,
        batch_command,
        grader_check_command,
        judge_command,
        report_command,
    )
    from arena.quality.run import quality_command

    commands = {"models": _prepare, "leaderboard": _leaderboard, "export": _export, "import": _import,
                "batch": batch_command, "judge": judge_command, "report": report_command, "quality": quality_command,
                "grader-check": grader_check_command}
    if not argv or argv[0] not in commands:
        serve(argv)
        return 0
    parser = argparse.ArgumentParser(prog="python -m arena")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="model files")
    models.add_argument("action", choices=["prepare"])
    board = sub.add_parser("leaderboard", help="print the leaderboard")
    board.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples for the CIs")
    board.add_argument("--seed", type=int, default=42)
    board.add_argument("--exclude-imported", action="store_true", help="leave out battles imported from files")
    board.add_argument("--source", choices=["human", "judge"], default="human",
                       help="human votes (default) or the automatic judge's verdicts: separate tables, never mixed")
    board.add_argument("--judge", help="with --source judge: only this judge's verdicts")
    board.add_argument("--category", help="only battles of this preset category ('typed': questions people wrote)")
    board.add_argument("--language", help="only battles in this language: zh or en (or an imported file's)")
    export = sub.add_parser("export", help="export votes or battles")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("-o", "--output", type=Path)
    imp = sub.add_parser("import", help="import battles (JSONL)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--trust-import", action="store_true",
                     help="rate the file's blind battles (unless an answer names a model); by default imported "
                          "battles are shown but not rated, because a file can claim anything")
    imp.add_argument("--max-upload-mb", type=float, default=20, help="largest file accepted (default 20 MB)")
    for p in (models, board, export, imp, *add_batch_commands(sub)):
        add_common_flags(p)
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
