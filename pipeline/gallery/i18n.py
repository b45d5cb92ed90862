"""UI strings of the site in each [site] lang (en, ja). Keys are the same in every language."""

from __future__ import annotations

STRINGS = {
    "en": {
        "works": "Works",
        "tags": "Tags",
        "all_tags": "All tags",
        "feed": "Feed",
        "page": "Page {n} of {total}",
        "newer": "← Newer",
        "older": "Older →",
        "previous": "← Previous work",
        "next": "Next work →",
        "home": "Gallery",
        "empty": "No works yet.",
        "empty_hint": "Mark a draft with a seed.txt; its variations appear here after the next build.",
        "prompt": "Prompt",
        "negative": "Negative prompt",
        "copy_label": "Copy",
        "copied": "Copied",
        "parameters": "Parameters",
        "model": "Model",
        "seed": "Seed",
        "steps": "Steps",
        "guidance": "Guidance",
        "strength": "Strength",
        "size": "Size",
        "scheduler": "Sampler",
        "variation": "Variation {n}",
        "variations": "Variations",
        "lineage": "Lineage",
        "draft": "Draft",
        "draft_note": "The txt2img draft these variations were made from",
        "full_size": "Full-size PNG",
        "open_work": "Open the work page",
        "close": "Close",
        "prev_image": "Previous image",
        "next_image": "Next image",
        "tagged": "Tagged “{tag}”",
        "n_works": "{n} works",
        "one_work": "1 work",
        "not_found": "Page not found",
        "not_found_hint": "This page does not exist (any more).",
        "back_home": "Back to the gallery",
        "published": "Published",
        "skip": "Skip to the works",
    },
    "ja": {
        "works": "作品",
        "tags": "タグ",
        "all_tags": "すべてのタグ",
        "feed": "フィード",
        "page": "{n} / {total} ページ",
        "newer": "← 新しい作品",
        "older": "古い作品 →",
        "previous": "← 前の作品",
        "next": "次の作品 →",
        "home": "ギャラリー",
        "empty": "まだ作品がありません。",
        "empty_hint": "下書きに seed.txt を置くと、次のビルドでバリエーションがここに表示されます。",
        "prompt": "プロンプト",
        "negative": "ネガティブプロンプト",
        "copy_label": "コピー",
        "copied": "コピーしました",
        "parameters": "パラメータ",
        "model": "モデル",
        "seed": "シード",
        "steps": "ステップ数",
        "guidance": "ガイダンス",
        "strength": "強度",
        "size": "サイズ",
        "scheduler": "サンプラー",
        "variation": "バリエーション {n}",
        "variations": "バリエーション",
        "lineage": "系譜",
        "draft": "下書き",
        "draft_note": "このバリエーションの元になった txt2img の下書き",
        "full_size": "原寸 PNG",
        "open_work": "作品ページを開く",
        "close": "閉じる",
        "prev_image": "前の画像",
        "next_image": "次の画像",
        "tagged": "タグ「{tag}」",
        "n_works": "{n} 作品",
        "one_work": "1 作品",
        "not_found": "ページが見つかりません",
        "not_found_hint": "このページは存在しません（削除された可能性があります）。",
        "back_home": "ギャラリーに戻る",
        "published": "公開日",
        "skip": "作品へスキップ",
    },
}


def strings(lang: str) -> dict[str, str]:
    return STRINGS[lang]


def format_date(iso: str, lang: str) -> str:
    """'2026-11-25T15:30:12Z' -> '25 Nov 2026' / '2026年11月25日' (no locale: same bytes everywhere)."""
    y, m, d = iso[:4], iso[5:7], iso[8:10]
    if not (y.isdigit() and m.isdigit() and d.isdigit()):
        return iso
    if lang == "ja":
        return f"{int(y)}年{int(m)}月{int(d)}日"
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    return f"{int(d)} {months[int(m) - 1]} {y}" if 1 <= int(m) <= 12 else iso
