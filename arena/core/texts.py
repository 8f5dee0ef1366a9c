"""Every text a person reads, in English and Chinese: page labels, status, refusals.

The page starts in the browser's language (``gr.I18n`` translates static labels in the
browser; ``language_of`` reads ``Accept-Language`` for the texts the server writes), and
a visible switch changes both. One table serves both paths, so a text can't be translated
in one and forgotten in the other. No gradio here: the arena's rules (rounds/rules.py) raise
refusals by key, and the API and CLI read them in English.
"""
from __future__ import annotations

from typing import Any, NamedTuple

LANGUAGES = {"en": "English", "zh": "中文"}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "# Local LLM Arena\nAsk two local models the same question, watch both answer, and vote.",
        "language": "Language",
        "model_status": "Model status",
        "tab_arena": "Arena", "tab_leaderboard": "Leaderboard", "tab_export": "Export / import",
        "mode": "Mode", "mode_named": "Side by side (named)", "mode_blind": "Battle (blind)",
        "model_a": "Model A", "model_b": "Model B",
        "blind_together": "Blind: show both answers only when both are finished",
        "blind_together_info": "Streaming speed can give a model away; this hides it until both are done.",
        "category": "Preset category", "preset": "Preset question",
        "question": "Your question", "question_placeholder": "Ask both models…",
        "send": "Send to both", "stop": "Stop", "new_round": "New round", "regenerate": "🔄 Regenerate",
        "metrics_attempt": " · attempt {n}",
        "vote_a": "A better", "vote_b": "B better", "vote_tie": "Tie", "vote_bothbad": "Both bad",
        "settings": "Generation settings (applied to both models, stored with the round)",
        "temperature": "Temperature", "top_p": "Top-p", "max_new_tokens": "Max new tokens",
        "system_prompt": "System prompt", "system_placeholder": "(none)",
        "metrics_empty": "Time to first token — · total — · tokens — · tokens/s —",
        "metrics": "Time to first token **{ttft}** · total **{total}** · tokens **{tokens}** · **{tps}** tokens/s",
        "metrics_streaming": "⏳ answering… · time to first token **{ttft}** · tokens so far **{tokens}**",
        "metrics_hidden": "Timings are hidden in a blind battle until you vote.",
        "metrics_hidden_streaming": "⏳ answering… (timings appear after your vote)",
        "held": "⏳ Both answers appear together when both are finished.",
        "stopped": "(stopped)", "error": "Error",
        "notice_dropped": "ℹ️ The {n} oldest question(s) of this round were left out to fit the model's context "
                          "window.",
        "notice_budget": "ℹ️ The answer is limited to {n} tokens to fit the model's context window.",
        "blind_error": "This answer failed. Press **New round** to try again.",
        "you_voted": "### You voted: {vote}",
        "was": "- **Model {side}** was **{name}** ({engine}, {quantization})",
        "timings_after_vote": "  - time to first token {ttft} · total {total} · {tokens} tokens · {tps} tokens/s",
        "counted": "- Counted for the leaderboard.",
        "not_rated": "- Kept but **not rated**: {flag}",
        "named_not_rated": "- Named votes are stored and shown apart; only blind battles are rated.",
        "reference": "**Reference answer:** {reference}",
        "status_model": "model", "status_state": "status",
        "state_ready": "ready (loaded in {seconds:.1f} s{memory})",
        "state_ready_remote": "ready (remote: {url})",
        "state_restarted": ", restarted {n}×",
        "state_memory": ", {mb:,.0f} MB resident",
        "state_waiting": "{state} ({seconds:.0f} s){detail}", "state_detail": ": {detail}",
        "state_failed": "failed: {detail}", "state_unavailable": "unavailable: {detail}",
        "states": "preparing|downloading|loading|ready|restarting|failed|unavailable|stopped",
        "leaderboard_intro": "Bradley-Terry ratings from **blind** battles (Elo scale, mean 1000), with 95% "
                             "bootstrap confidence intervals. Rank = 1 + models whose interval lies wholly above.",
        "refresh": "Refresh",
        "rated_table": "Rated (blind) battles", "named_table": "Named votes (stored, not rated)",
        "ratings_plot": "Ratings with 95% CI", "winrate_plot": "Pairwise win fraction",
        "speed_plot": "Speed vs quality",
        "export_intro": "Votes as CSV (UTF-8 with BOM, opens in Excel) or battles as FastChat-compatible JSONL.",
        "export_csv": "Export votes (CSV)", "export_jsonl": "Export battles (JSONL)", "download": "Download",
        "import_file": "Import battles (JSONL from another arena or a FastChat log)",
        "imported": "Imported **{added}** battle(s); **{skipped}** were already stored. Imported battles are "
                    "shown but not rated (rate trusted files with `python -m arena import FILE --trust-import`).",
        "admin_token": "Admin token", "admin_token_info": "Export, import and batch runs need the token printed "
                       "when the arena started (or set in ARENA_ADMIN_TOKEN).",
        "admin_needed": "Export, import and batch runs need the admin token: the one printed when the arena "
                        "started, or the value of ARENA_ADMIN_TOKEN. Enter it in the Admin token box.",
        "admin_behind_proxy": "This request came through a proxy, so the page is reachable from other machines, "
                              "and export, import and batch runs need an admin token. Restart the arena with "
                              "--trusted-proxy <proxy address> (it prints a token) or set ARENA_ADMIN_TOKEN.",
        "download_note": "(one download, for this browser only, within {minutes} min)",
        "metrics_queued": " · ⏳ waited **{seconds:.1f} s** for the model (busy with another answer)",
        "reason_engine_missing": "the {engine} engine is not installed; run {command}, then restart the arena",
        "reason_optional_missing": "optional model, not installed; run {command}, then restart the arena",
        "reason_prepare_failed": "could not prepare the weights: {error}",
        "reason_checking": "checking {url}",
        "reason_key_unset": "environment variable {variable} is not set; export it with the API key of {url} "
                            "and restart the arena",
        "reason_unreachable": "cannot reach {url} ({error}); is the server running? Retrying every 15 s",
        "reason_key_refused": "{url} refused the API key (HTTP {status}); check {variable}",
        "reason_http": "{url}/models answered HTTP {status}",
        "reason_not_openai": "{url}/models did not answer an OpenAI model list ({error}); is base_url the API "
                             "root ending in /v1? Retrying every 15 s",
        "reason_not_served": "{url} does not serve {model!r}; it serves {served}. Fix 'endpoint.model' in "
                             "models.yaml",
        "reason_restarting": "the worker exited with code {code}; restarting",
        "reason_not_healthy": "not healthy after {seconds} s{problem}",
        "include_imported": "Include imported battles",
        "no_votes": "There are no votes to export yet. Vote on a round first.",
        "col_rank": "rank", "col_model": "model", "col_rating": "rating", "col_ci_95": "95% CI",
        "col_battles": "battles", "col_win_rate": "win rate", "col_mean_tokens_per_s": "mean tokens/s",
        "col_median_tokens_per_s": "median tokens/s", "col_mean_ttft_s": "mean TTFT (s)",
        "col_wins": "wins", "col_ties": "ties", "col_losses": "losses", "col_judged_pairs": "judged pairs",
        "chart_no_battles": "No rated (blind) battles yet",
        "chart_ratings_x": "Bradley-Terry rating (Elo scale), 95% bootstrap CI",
        "chart_ratings_title": "Ratings from blind battles",
        "chart_winrate_title": "Win fraction of A over B (decisive battles)",
        "chart_model_a": "model A", "chart_model_b": "model B",
        "chart_speed_x": "median decode speed in blind battles (tokens/s)",
        "chart_speed_y": "rating (95% CI)",
        "chart_speed_title": "Speed vs quality",
    },
    "zh": {
        "title": "# 本地大模型竞技场\n向两个本地模型提出同一个问题，同时观看两者作答，然后投票。",
        "language": "语言",
        "model_status": "模型状态",
        "tab_arena": "竞技场", "tab_leaderboard": "排行榜", "tab_export": "导出 / 导入",
        "mode": "模式", "mode_named": "并排对比（显示名称）", "mode_blind": "匿名对战",
        "model_a": "模型 A", "model_b": "模型 B",
        "blind_together": "匿名对战：两个回答都完成后才一起显示",
        "blind_together_info": "流式输出的速度可能暴露模型身份；勾选后在两者都完成前不显示。",
        "category": "预设问题类别", "preset": "预设问题",
        "question": "你的问题", "question_placeholder": "向两个模型提问……",
        "send": "同时发送", "stop": "停止", "new_round": "新一轮", "regenerate": "🔄 重新生成",
        "metrics_attempt": " · 第 {n} 次作答",
        "vote_a": "A 更好", "vote_b": "B 更好", "vote_tie": "平局", "vote_bothbad": "都不好",
        "settings": "生成参数（两个模型共用，随本轮一起保存）",
        "temperature": "温度", "top_p": "Top-p", "max_new_tokens": "最大生成 token 数",
        "system_prompt": "系统提示词", "system_placeholder": "（无）",
        "metrics_empty": "首 token 时间 — · 总时间 — · token 数 — · token/秒 —",
        "metrics": "首 token 时间 **{ttft}** · 总时间 **{total}** · token 数 **{tokens}** · **{tps}** token/秒",
        "metrics_streaming": "⏳ 作答中…… · 首 token 时间 **{ttft}** · 已生成 token **{tokens}**",
        "metrics_hidden": "匿名对战中，计时数据在投票后显示。",
        "metrics_hidden_streaming": "⏳ 作答中……（计时数据在投票后显示）",
        "held": "⏳ 两个回答都完成后会一起显示。",
        "stopped": "（已停止）", "error": "错误",
        "notice_dropped": "ℹ️ 为了放进模型的上下文窗口，本轮最早的 {n} 个问题未发送给模型。",
        "notice_budget": "ℹ️ 为了放进模型的上下文窗口，回答最多 {n} 个 token。",
        "blind_error": "这个回答失败了。请点击 **新一轮** 重试。",
        "you_voted": "### 你的投票：{vote}",
        "was": "- **模型 {side}** 是 **{name}**（{engine}，{quantization}）",
        "timings_after_vote": "  - 首 token 时间 {ttft} · 总时间 {total} · {tokens} 个 token · {tps} token/秒",
        "counted": "- 已计入排行榜。",
        "not_rated": "- 已保存但**不计分**：{flag}",
        "named_not_rated": "- 显示名称的投票单独保存和展示；只有匿名对战计分。",
        "reference": "**参考答案：** {reference}",
        "status_model": "模型", "status_state": "状态",
        "state_ready": "就绪（加载用时 {seconds:.1f} 秒{memory}）",
        "state_ready_remote": "就绪（远程：{url}）",
        "state_restarted": "，已重启 {n} 次",
        "state_memory": "，常驻内存 {mb:,.0f} MB",
        "state_waiting": "{state}（{seconds:.0f} 秒）{detail}", "state_detail": "：{detail}",
        "state_failed": "失败：{detail}", "state_unavailable": "不可用：{detail}",
        "states": "准备中|下载中|加载中|就绪|重启中|失败|不可用|已停止",
        "leaderboard_intro": "根据**匿名**对战计算的 Bradley-Terry 评分（Elo 刻度，均值 1000），附 95% "
                             "自助法置信区间。名次 = 1 + 置信区间完全高于它的模型数。",
        "refresh": "刷新",
        "rated_table": "计分的（匿名）对战", "named_table": "显示名称的投票（已保存，不计分）",
        "ratings_plot": "评分及 95% 置信区间", "winrate_plot": "两两胜率",
        "speed_plot": "速度与质量",
        "export_intro": "投票导出为 CSV（带 BOM 的 UTF-8，可用 Excel 打开），对战导出为兼容 FastChat 的 JSONL。",
        "export_csv": "导出投票（CSV）", "export_jsonl": "导出对战（JSONL）", "download": "下载",
        "import_file": "导入对战（来自其他竞技场或 FastChat 日志的 JSONL）",
        "imported": "已导入 **{added}** 场对战；**{skipped}** 场此前已保存。导入的对战只展示、不计分"
                    "（可信文件可用 `python -m arena import FILE --trust-import` 计分）。",
        "admin_token": "管理员令牌",
        "admin_token_info": "导出、导入和批量运行需要竞技场启动时打印的令牌（或 ARENA_ADMIN_TOKEN 的值）。",
        "admin_needed": "导出、导入和批量运行需要管理员令牌：竞技场启动时打印的那个，或 ARENA_ADMIN_TOKEN 的值。"
                        "请在“管理员令牌”框中输入。",
        "admin_behind_proxy": "此请求经由代理到达，说明页面可从其他机器访问，因此导出、导入和批量运行需要管理员令牌。"
                              "请用 --trusted-proxy <代理地址> 重启竞技场（会打印令牌），或设置 ARENA_ADMIN_TOKEN。",
        "download_note": "（仅限本浏览器下载一次，{minutes} 分钟内有效）",
        "metrics_queued": " · ⏳ 等待模型 **{seconds:.1f} 秒**（模型正忙于其他回答）",
        "reason_engine_missing": "未安装 {engine} 引擎；请运行 {command}，然后重启竞技场",
        "reason_optional_missing": "可选模型，尚未安装；请运行 {command}，然后重启竞技场",
        "reason_prepare_failed": "无法准备权重：{error}",
        "reason_checking": "正在检查 {url}",
        "reason_key_unset": "环境变量 {variable} 未设置；请用 {url} 的 API 密钥设置它，然后重启竞技场",
        "reason_unreachable": "无法连接 {url}（{error}）；服务器在运行吗？每 15 秒重试一次",
        "reason_key_refused": "{url} 拒绝了 API 密钥（HTTP {status}）；请检查 {variable}",
        "reason_http": "{url}/models 返回 HTTP {status}",
        "reason_not_openai": "{url}/models 返回的不是 OpenAI 模型列表（{error}）；base_url 应为以 /v1 结尾的 API "
                             "根地址。每 15 秒重试一次",
        "reason_not_served": "{url} 没有提供 {model!r}；它提供的是 {served}。请修改 models.yaml 中的 "
                             "'endpoint.model'",
        "reason_restarting": "工作进程以代码 {code} 退出；正在重启",
        "reason_not_healthy": "{seconds} 秒后仍未就绪{problem}",
        "include_imported": "包括导入的对战",
        "no_votes": "还没有可导出的投票。请先为一轮对战投票。",
        "col_rank": "名次", "col_model": "模型", "col_rating": "评分", "col_ci_95": "95% 置信区间",
        "col_battles": "对战数", "col_win_rate": "胜率", "col_mean_tokens_per_s": "平均 token/秒",
        "col_median_tokens_per_s": "token/秒中位数", "col_mean_ttft_s": "平均首 token 时间（秒）",
        "col_wins": "胜", "col_ties": "平", "col_losses": "负", "col_judged_pairs": "评审对数",
        "chart_no_battles": "还没有计分的（匿名）对战",
        "chart_ratings_x": "Bradley-Terry 评分（Elo 刻度），95% 自助法置信区间",
        "chart_ratings_title": "匿名对战评分",
        "chart_winrate_title": "A 对 B 的胜率（仅计分出胜负的对战）",
        "chart_model_a": "模型 A", "chart_model_b": "模型 B",
        "chart_speed_x": "匿名对战中的解码速度中位数（token/秒）",
        "chart_speed_y": "评分（95% 置信区间）",
        "chart_speed_title": "速度与质量",
    },
}


def _merge(block: dict[str, dict[str, str]]) -> None:
    """Add one feature's texts, kept beside each other below, to every language's table."""
    for lang, texts in block.items():
        TEXTS[lang].update(texts)

# Refusals (rounds.ArenaError keys). The English text is also the API's error message.
REFUSALS: dict[str, dict[str, str]] = {
    "en": {
        "blind_needs_two": "A blind battle needs two ready models; ready now: {ready}. Wait for the models to "
                           "load (see Model status).",
        "pick_both": "Pick a model for both A and B.",
        "same_model": "Model A and Model B are both {model!r}; pick two different models.",
        "model_unavailable": "{detail}",
        "bad_mode": "mode must be one of {modes}, got {mode!r}",
        "round_not_open": "Round {round_id} is not open in this session; press 'New round'.",
        "empty_question": "The question is empty. Type a question or pick a preset first.",
        "question_too_long": "The question is {length:,} characters; the limit is {limit:,} (change it with "
                             "--max-question-chars).",
        "bad_text": "The {what} contains {problem} at character {position}; it can't be stored or sent. "
                    "Remove it and try again.",
        "system_too_long": "The system prompt is {length:,} characters; the limit is {limit:,}.",
        "too_many": "Too many {what} from this {who} ({limit} per minute). Wait {wait:.0f} s and try again.",
        "too_many_turns": "This round already has {turns} questions, the most one round takes. Vote, or press "
                          "'New round'.",
        "still_streaming": "This round is still answering. Wait for both answers (or press Stop), then ask again.",
        "vote_while_streaming": "Wait until both answers are finished (or press Stop) before voting.",
        "unknown_vote": "Unknown vote {choice!r}; use one of: {choices}.",
        "no_such_round": "There is no such round to vote on. Ask a question first.",
        "other_session": "This round belongs to another session; you can only vote on your own rounds.",
        "already_voted": "This round already has a vote; each round gets exactly one. Press 'New round'.",
        "no_answers": "This round has no answers yet; wait for them before voting.",
        "regenerate_voted": "You have voted on these answers, so they stay as they are. Ask a question to start a "
                            "new round.",
        "nothing_to_regenerate": "There is nothing to answer again yet: ask a question first.",
        "too_many_attempts": "This question has been answered {attempts} times, the most one question takes. Vote, "
                             "or press New round.",
        "failed_round": "Votes are not taken on rounds where an answer failed ({error}). The round is stored "
                        "with its error; press 'New round' to try again.",
        "bad_temperature": "temperature must be between 0 and 2, got {value}",
        "bad_top_p": "top_p must be above 0 and at most 1, got {value}",
        "bad_max_tokens": "max_new_tokens must be between 1 and 8192, got {value}",
        "what_questions": "questions", "what_votes": "votes", "what_uploads": "uploads",
        "what_leaderboard": "leaderboard views", "who_session": "session", "who_address": "address",
        "what_question": "question", "what_system": "system prompt",
    },
    "zh": {
        "blind_needs_two": "匿名对战需要两个就绪的模型；目前就绪：{ready}。请等待模型加载完成（见“模型状态”）。",
        "pick_both": "请为 A 和 B 各选一个模型。",
        "same_model": "模型 A 和模型 B 都是 {model!r}；请选择两个不同的模型。",
        "model_unavailable": "{detail}",
        "bad_mode": "模式必须是 {modes} 之一，收到 {mode!r}",
        "round_not_open": "第 {round_id} 轮不在本会话中；请点击“新一轮”。",
        "empty_question": "问题为空。请先输入问题或选择预设问题。",
        "question_too_long": "问题有 {length:,} 个字符，上限是 {limit:,}（可用 --max-question-chars 修改）。",
        "bad_text": "{what}在第 {position} 个字符处含有{problem}，无法保存或发送。请删除后重试。",
        "system_too_long": "系统提示词有 {length:,} 个字符，上限是 {limit:,}。",
        "too_many": "此{who}的{what}过于频繁（每分钟最多 {limit} 次）。请等待 {wait:.0f} 秒后重试。",
        "too_many_turns": "本轮已有 {turns} 个问题，达到单轮上限。请投票，或点击“新一轮”。",
        "still_streaming": "本轮仍在作答。请等两个回答都完成（或点击“停止”）后再提问。",
        "vote_while_streaming": "请等两个回答都完成（或点击“停止”）后再投票。",
        "unknown_vote": "未知的投票 {choice!r}；请使用：{choices}。",
        "no_such_round": "没有可以投票的这一轮。请先提问。",
        "other_session": "这一轮属于另一个会话；只能为自己的对战投票。",
        "already_voted": "这一轮已经投过票；每轮只能投一次。请点击“新一轮”。",
        "no_answers": "这一轮还没有回答；请等回答完成后再投票。",
        "regenerate_voted": "你已对这些回答投票，它们不再改变。输入新问题即可开始新一轮。",
        "nothing_to_regenerate": "还没有可以重新生成的回答：请先提问。",
        "too_many_attempts": "这个问题已作答 {attempts} 次，达到上限。请投票，或点击“新一轮”。",
        "failed_round": "有回答失败的轮次不接受投票（{error}）。本轮已连同错误一起保存；请点击“新一轮”重试。",
        "bad_temperature": "温度必须在 0 到 2 之间，收到 {value}",
        "bad_top_p": "top_p 必须大于 0 且不超过 1，收到 {value}",
        "bad_max_tokens": "最大生成 token 数必须在 1 到 8192 之间，收到 {value}",
        "what_questions": "提问", "what_votes": "投票", "what_uploads": "上传", "what_leaderboard": "排行榜刷新", "who_session": "会话", "who_address": "地址",
        "what_question": "问题", "what_system": "系统提示词",
    },
}
_merge(REFUSALS)

# The Batch tab and the judge's table (arena/web/batch_panel.py).
BATCH: dict[str, dict[str, str]] = {
    "en": {
        "tab_batch": "Batch",
        "batch_intro": "Run presets through models; every answer is graded (by its preset's assertions, or by the "
                       "grader model's probability that it reaches the reference's conclusion) and every pair gets a "
                       "verdict; the report link appears below when the run is done. The run goes on if you close the "
                       "page. One batch at a time: meanwhile the Arena tab's answers share the cores with it.",
        "batch_models": "Models", "batch_presets": "Presets", "batch_repeats": "Repeats", "batch_judge": "Grader",
        "batch_judge_default": "the largest local model (default)", "batch_judge_none": "no grader model (assertions only)",
        "batch_start": "Start batch", "batch_stop": "Stop after the current group", "batch_refresh": "Refresh models",
        "batch_report": "Report (HTML, opens offline)",
        "batch_idle": "No batch run yet.",
        "batch_running": "Running {run}: {phase}.",
        "batch_done": "Done: {run}. The report is below.",
        "batch_interrupted": "Stopped: {run}. Resume with `python -m arena batch --resume {run}`.",
        "batch_failed": "Failed: {run}: {error}",
        "batch_eta": "About {minutes} min {seconds} s left.",
        "judge_table": "Graders' verdicts on batch pairs (Bradley-Terry, 95% CI). Not human votes: each batch "
                       "report says how far its grader can be trusted.",
        "judge_rates": "Pass rates of graded batch answers (all runs): overall, by category and by language",
        "review_intro": "### Review grades\nThe graders are small and often wrong. Go through a run's answers: each "
                        "shows the grade that counted and what decided it. Mark whether the answer reaches the "
                        "reference's conclusion. Your labels are stored; `python -m arena grader-check` measures "
                        "every grader against them and fits its pass threshold per language.",
        "review_run": "Run to review", "review_next": "Next answer", "review_correct": "✓ Correct",
        "review_partly": "◐ Partly correct", "review_wrong": "✗ Wrong",
        "review_pick": "Pick a run to review, then press “Next answer”.",
        "review_no_answer": "No answer is shown: pick a run and press “Next answer” first.",
        "review_tally": "**{labelled} of {total}** answers with a reference reviewed; the grade agreed with you on "
                        "{agreed} of the {both} that were graded.",
        "review_done": "Every answer of this run with a reference is reviewed. `python -m arena grader-check` measures "
                       "the graders against your labels.",
        "review_saved": "Saved: {label}.",
        "review_item": "**{model}** · preset `{preset}` · {language}\n\n**Question**\n\n{question}\n\n"
                       "**Reference**\n\n{reference}\n\n**Answer**\n\n{answer}\n\n**Grade:** {verdict} — {basis}",
        "review_passed": "passed", "review_failed": "failed", "review_ungraded": "not graded",
        "basis_check": "the exact reference check read {found} where the reference says {expected}",
        "basis_assertions": "the preset's assertions", "basis_none": "no grader decided it",
        "basis_model": "{grader} gave P(yes) {p} (it passes at {threshold})",
        "label_correct": "correct", "label_partly correct": "partly correct", "label_wrong": "wrong",
    },
    "zh": {
        "tab_batch": "批量",
        "batch_intro": "让所选模型回答预设问题；每个回答都会被评分（按预设问题的断言，或按评分模型认为它与参考答案结论一致的概率），"
                       "每一对回答得出判定；运行结束后报告链接显示在下方。关闭页面不会中断运行。同一时间只运行一个批量任务："
                       "运行期间竞技场页面的回答与它共用 CPU 核心。",
        "batch_models": "模型", "batch_presets": "预设问题", "batch_repeats": "重复次数", "batch_judge": "评分模型",
        "batch_judge_default": "最大的本地模型（默认）", "batch_judge_none": "不用评分模型（只用断言）",
        "batch_start": "开始批量运行", "batch_stop": "当前这组完成后停止", "batch_refresh": "刷新模型列表",
        "batch_report": "报告（HTML，可离线打开）",
        "batch_idle": "还没有批量运行。",
        "batch_running": "正在运行 {run}：{phase}。",
        "batch_done": "完成：{run}。报告在下方。",
        "batch_interrupted": "已停止：{run}。可用 `python -m arena batch --resume {run}` 继续。",
        "batch_failed": "失败：{run}：{error}",
        "batch_eta": "预计还需 {minutes} 分 {seconds} 秒。",
        "judge_table": "评分器对批量回答对的判定（Bradley-Terry，95% 置信区间）。这不是人工投票：每份批量报告都说明了评分器的可信程度。",
        "judge_rates": "已评分批量回答的通过率（所有运行）：总体、按类别、按语言",
        "review_intro": "### 复核评分\n评分模型很小，常会判错。逐个查看一次运行的回答：每个回答都显示计入的评分以及它的依据。"
                        "请标注回答是否得出了参考答案的结论。你的标注会被保存；`python -m arena grader-check` "
                        "用它们衡量每个评分器，并按语言拟合通过阈值。",
        "review_run": "要复核的运行", "review_next": "下一个回答", "review_correct": "✓ 正确",
        "review_partly": "◐ 部分正确", "review_wrong": "✗ 错误",
        "review_pick": "请选择要复核的运行，然后点击“下一个回答”。",
        "review_no_answer": "当前没有显示回答：请先选择运行并点击“下一个回答”。",
        "review_tally": "已复核 **{labelled} / {total}** 个有参考答案的回答；在其中已评分的 {both} 个里，评分与你一致的有 {agreed} 个。",
        "review_done": "这次运行中有参考答案的回答都已复核。`python -m arena grader-check` 会用你的标注衡量各评分器。",
        "review_saved": "已保存：{label}。",
        "review_item": "**{model}** · 预设 `{preset}` · {language}\n\n**问题**\n\n{question}\n\n"
                       "**参考答案**\n\n{reference}\n\n**回答**\n\n{answer}\n\n**评分：**{verdict}——{basis}",
        "review_passed": "通过", "review_failed": "未通过", "review_ungraded": "未评分",
        "basis_check": "参考答案精确核对：回答给出 {found}，参考答案为 {expected}",
        "basis_assertions": "预设问题的断言", "basis_none": "没有评分器给出评分",
        "basis_model": "{grader} 判定“是”的概率为 {p}（达到 {threshold} 即通过）",
        "label_correct": "正确", "label_partly correct": "部分正确", "label_wrong": "错误",
    },
}
_merge(BATCH)

# What INT4 costs (python -m arena quality), on the Leaderboard tab and in reports (arena/quality/board.py).
QUALITY: dict[str, dict[str, str]] = {
    "en": {
        "quality_heading": "### What INT4 costs: quality × speed × memory",
        "quality_intro": "Each model's next-token distributions against the full-precision reference **{reference}** "
                         "over the same {tokens:,} tokens of text (`python -m arena quality`). Lower KL divergence is "
                         "closer to the reference; mean KL and same-top-token come with 95% intervals.",
        "quality_none": "No quality measurements yet. Run `python -m arena quality --models ID,ID` to compare INT4 "
                        "paths with their full-precision reference.",
        "quality_table": "KL divergence to the reference, perplexity, decode speed and resident memory",
        "quality_plot": "Quality vs speed (marker size: resident memory)",
        "col_engine": "engine", "col_kl_mean": "mean KL [95% CI]", "col_kl_p99": "KL p99",
        "col_same_top": "same top token % [95% CI]", "col_ppl": "PPL", "col_ppl_ratio": "PPL ratio [95% CI]",
        "col_rms_dp": "RMS Δp % [95% CI]", "col_decode_tps": "decode tok/s", "col_rss_mb": "RSS MB",
        "quality_reference_row": "(reference)", "quality_approximate": "(top-20 approximate)",
        "chart_quality_x": "decode speed (tokens/s)", "chart_quality_y": "mean KL divergence to the reference",
        "chart_quality_title": "What INT4 costs: quality vs speed",
        "chart_quality_reference": "reference",
    },
    "zh": {
        "quality_heading": "### INT4 的代价：质量 × 速度 × 内存",
        "quality_intro": "每个模型在同一段 {tokens:,} 个 token 的文本上、每个位置的下一 token 分布与全精度参考模型 "
                         "**{reference}** 的比较（`python -m arena quality`）。KL 散度越小越接近参考；平均 KL "
                         "与首选 token 一致率附 95% 置信区间。",
        "quality_none": "还没有质量测量。运行 `python -m arena quality --models ID,ID`，把各 INT4 路径与其全精度参考模型比较。",
        "quality_table": "与参考模型的 KL 散度、困惑度、解码速度与常驻内存",
        "quality_plot": "质量与速度（标记大小：常驻内存）",
        "col_engine": "引擎", "col_kl_mean": "平均 KL [95% 区间]", "col_kl_p99": "KL 第 99 百分位",
        "col_same_top": "首选 token 一致率 % [95% 区间]", "col_ppl": "困惑度", "col_ppl_ratio": "困惑度比 [95% 区间]",
        "col_rms_dp": "正确 token 概率变化 RMS % [95% 区间]", "col_decode_tps": "解码 token/秒", "col_rss_mb": "常驻内存 MB",
        "quality_reference_row": "（参考）", "quality_approximate": "（前 20 近似）",
        "chart_quality_x": "解码速度（token/秒）", "chart_quality_y": "与参考模型的平均 KL 散度",
        "chart_quality_title": "INT4 的代价：质量与速度",
        "chart_quality_reference": "参考",
    },
}
_merge(QUALITY)

# The leaderboard's selections and style control (arena/web/page.py leaderboard_panel, style_control.py).
BOARD: dict[str, dict[str, str]] = {
    "en": {
        "board_category": "Category", "board_language": "Language", "board_all": "All",
        "topic_typed": "typed questions (no preset)", "lang_zh": "Chinese", "lang_en": "English",
        "board_battles": "{n} rated battle(s) in this selection.",
        "board_too_few": "Only {n} rated battle(s) in this selection: ratings need at least {min}, so none are "
                         "shown. Vote in more blind battles, or widen the selection.",
        "style_table": "With style control: ratings once answer length, headers, lists and bold are accounted for "
                       "(FastChat's method); rank change against the plain ratings",
        "style_coefficients": "Style coefficients: what each feature is worth (log-odds and rating points per "
                              "standard deviation of the normalised difference, 95% CI). Length is counted in "
                              "characters, for Chinese and English alike.",
        "col_rank_sc": "rank (style ctrl)", "col_rating_sc": "rating (style ctrl)", "col_ci_sc": "95% CI",
        "col_rank_change": "rank change", "col_feature": "feature", "col_coefficient": "coefficient",
        "col_coefficient_ci": "95% CI", "col_elo_per_sd": "rating points per SD [95% CI]",
        "feature_length": "length (characters)", "feature_headers": "headers", "feature_lists": "list items",
        "feature_bold": "bold", "retired": "(retired)",
    },
    "zh": {
        "board_category": "类别", "board_language": "语言", "board_all": "全部",
        "topic_typed": "手动输入的问题（非预设）", "lang_zh": "中文", "lang_en": "英文",
        "board_battles": "此选择下共有 {n} 场计分对战。",
        "board_too_few": "此选择下只有 {n} 场计分对战：评分至少需要 {min} 场，因此不显示。请在匿名对战中多投票，或放宽选择。",
        "style_table": "风格控制后的评分：扣除回答长度、标题、列表与加粗的影响（FastChat 的方法）；以及相对普通评分的名次变化",
        "style_coefficients": "风格系数：每个特征的影响（按归一化差值每个标准差的对数几率与评分点，95% 置信区间）。"
                              "长度按字符计，中英文一视同仁。",
        "col_rank_sc": "名次（风格控制）", "col_rating_sc": "评分（风格控制）", "col_ci_sc": "95% 置信区间",
        "col_rank_change": "名次变化", "col_feature": "特征", "col_coefficient": "系数",
        "col_coefficient_ci": "95% 置信区间", "col_elo_per_sd": "每个标准差的评分点 [95% 置信区间]",
        "feature_length": "长度（字符）", "feature_headers": "标题", "feature_lists": "列表项",
        "feature_bold": "加粗", "retired": "（已退役）",
    },
}
_merge(BOARD)

# What a model is doing while it gets ready (status panel), and why it cannot: written by workers, the supervisor
# and the engines as phrases (a key and its values), read in the page's language. Names, files, recipes and
# commands stay as they are.
LOADING: dict[str, dict[str, str]] = {
    "en": {
        "detail_worker": "pid {pid}, {threads} thread(s)",
        "detail_with_notes": "{detail}; {notes}",
        "phase_loading_weights": "loading full-precision weights from {file}",
        "phase_quantizing_int4": "quantizing to INT4 ({recipe})",
        "phase_saving_cache": "saving the INT4 cache",
        "phase_loading_cache": "loading INT4 weights from the cache",
        "phase_cache_rebuild": "the INT4 cache is not usable ({error}); rebuilding it",
        "phase_itrex_convert": "converting to neural-speed fp32 ({expect})",
        "phase_itrex_cached": "loading the cached ITREX INT4 file ({recipe})",
        "phase_itrex_quantize": "quantizing with ITREX RTN {recipe} ({expect})",
        "phase_tensor": "{phase} — tensor {done}/{total}",
        "phase_itrex_native": "neural-speed reads {model_type} natively: no conversion",
        "native_unreadable": "config.json unreadable ({error})",
        "native_unknown": "neural-speed cannot read {model_type!r} as it is",
        "native_no_tokenizer": "{model_type} without a SentencePiece tokenizer.model",
        "native_not_sharded": "{model_type} weights not sharded (neural-speed reads model-00001-of-N.safetensors or "
                              "pytorch_model.bin)",
        "phase_itrex_converting": "{why}: converting",
        "phase_waiting_lock": "waiting: another worker is preparing the same weights",
        "phase_itrex_prepare": "converting to an HF directory for ITREX ({expect})",
        "phase_vllm_prepare": "converting to an HF directory for vLLM ({expect})",
        "phase_vllm_starting": "starting vLLM's server, {threads} thread(s) (about 2 min the first time: it "
                               "compiles its graphs)",
        "expect_minutes": "expect about {minutes} min for {gparams} B parameters",
        "expect_seconds": "expect about {seconds} s for {gparams} B parameters",
        "expect_unknown": "size unknown",
        "memory_warning": "warning: {what} {model} ({size}) needs about {need} GB at its peak; {available} GB is "
                          "available; the other model loading at the same time may not fit",
        "memory_refused": "{what} {model} ({size}) needs about {need} GB at its peak; {available} GB is available. "
                          "Free memory (close the other model or programs), use a smaller model or a machine with "
                          "more RAM; ARENA_MEMORY_CHECK=warn tries anyway",
        "size_params": "{gparams} B parameters", "size_file": "a {gb} GB file",
        "step_itrex-prepare": "converting to an HF directory for ITREX",
        "step_itrex-convert": "converting to neural-speed fp32",
        "step_itrex-convert-native": "converting to neural-speed fp32",
        "step_itrex-quantize": "quantizing with ITREX RTN", "step_itrex-run": "loading the cached ITREX file",
        "step_transformers": "loading fp32 and quantizing",
        "step_transformers-gguf": "dequantizing the GGUF to fp32 and quantizing",
        "step_transformers-cached": "loading the INT4 cache", "step_llamacpp": "loading the GGUF",
        "step_vllm-prepare": "converting to an HF directory for vLLM", "step_vllm-run": "serving with vLLM",
    },
    "zh": {
        "detail_worker": "进程 {pid}，{threads} 个线程",
        "detail_with_notes": "{detail}；{notes}",
        "phase_loading_weights": "正在从 {file} 加载全精度权重",
        "phase_quantizing_int4": "正在量化为 INT4（{recipe}）",
        "phase_saving_cache": "正在保存 INT4 缓存",
        "phase_loading_cache": "正在从缓存加载 INT4 权重",
        "phase_cache_rebuild": "INT4 缓存不可用（{error}），正在重建",
        "phase_itrex_convert": "正在转换为 neural-speed fp32（{expect}）",
        "phase_itrex_cached": "正在加载已缓存的 ITREX INT4 文件（{recipe}）",
        "phase_itrex_quantize": "正在用 ITREX RTN {recipe} 量化（{expect}）",
        "phase_tensor": "{phase} — 张量 {done}/{total}",
        "phase_itrex_native": "neural-speed 可直接读取 {model_type}：无需转换",
        "native_unreadable": "无法读取 config.json（{error}）",
        "native_unknown": "neural-speed 无法直接读取 {model_type!r}",
        "native_no_tokenizer": "{model_type} 缺少 SentencePiece 的 tokenizer.model",
        "native_not_sharded": "{model_type} 的权重未分片（neural-speed 读取 model-00001-of-N.safetensors 或 "
                              "pytorch_model.bin）",
        "phase_itrex_converting": "{why}：正在转换",
        "phase_waiting_lock": "等待中：另一个进程正在准备同一份权重",
        "phase_itrex_prepare": "正在转换为 ITREX 可读的 HF 目录（{expect}）",
        "phase_vllm_prepare": "正在转换为 vLLM 可读的 HF 目录（{expect}）",
        "phase_vllm_starting": "正在启动 vLLM 服务器，{threads} 个线程（首次约 2 分钟：需要编译计算图）",
        "expect_minutes": "{gparams} B 参数，预计约 {minutes} 分钟",
        "expect_seconds": "{gparams} B 参数，预计约 {seconds} 秒",
        "expect_unknown": "大小未知",
        "memory_warning": "注意：{what} {model}（{size}）峰值约需 {need} GB 内存，当前可用 {available} GB；同时加载的"
                          "另一个模型可能放不下",
        "memory_refused": "{what} {model}（{size}）峰值约需 {need} GB 内存，当前可用 {available} GB。请释放内存（关闭"
                          "另一个模型或其他程序）、换用更小的模型或内存更大的机器；设置 ARENA_MEMORY_CHECK=warn 可强行尝试",
        "size_params": "{gparams} B 参数", "size_file": "{gb} GB 的文件",
        "step_itrex-prepare": "转换为 ITREX 可读的 HF 目录",
        "step_itrex-convert": "转换为 neural-speed fp32", "step_itrex-convert-native": "转换为 neural-speed fp32",
        "step_itrex-quantize": "用 ITREX RTN 量化", "step_itrex-run": "加载已缓存的 ITREX 文件",
        "step_transformers": "加载 fp32 并量化", "step_transformers-gguf": "将 GGUF 反量化为 fp32 并量化",
        "step_transformers-cached": "加载 INT4 缓存", "step_llamacpp": "加载 GGUF",
        "step_vllm-prepare": "转换为 vLLM 可读的 HF 目录", "step_vllm-run": "用 vLLM 提供服务",
    },
}
_merge(LOADING)

STATE_NAMES = {lang: dict(zip(TEXTS["en"]["states"].split("|"), TEXTS[lang]["states"].split("|")))
               for lang in TEXTS}


def t(key: str, lang: str = "en", **values) -> str:
    """The text for ``key`` in ``lang`` (English when the language is unknown), formatted with ``values``."""
    text = TEXTS.get(lang, TEXTS["en"]).get(key) or TEXTS["en"][key]
    return text.format(**values) if values else text


class Phrase(NamedTuple):
    """A text key and its values, to be read in any language (values may be phrases themselves). Hashable, so
    a model's status can carry it; ``to_json``/``from_json`` carry it from a worker's log to the supervisor."""

    key: str
    values: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict:
        return {"key": self.key, "values": {k: v.to_json() if isinstance(v, Phrase) else v for k, v in self.values}}

    @classmethod
    def from_json(cls, data: dict) -> "Phrase":
        values = data.get("values") or {}
        return cls(str(data["key"]), tuple((k, cls.from_json(v) if isinstance(v, dict) and "key" in v else v)
                                            for k, v in values.items()))


def phrase(key: str, **values) -> Phrase:
    if key not in TEXTS["en"]:
        raise KeyError(f"no text {key!r} in texts.py")
    return Phrase(key, tuple(values.items()))


def say(text: "Phrase | str", lang: str = "en") -> str:
    """A phrase in ``lang`` (a plain string is shown as it is: a name, a command, a message from elsewhere)."""
    if not isinstance(text, Phrase):
        return text
    return t(text.key, lang, **{k: say(v, lang) if isinstance(v, Phrase) else v for k, v in text.values})


def language_of(accept_language: str | None) -> str:
    """'zh' or 'en' from an Accept-Language header, by the first listed language we have."""
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in TEXTS:
            return code
    return "en"
