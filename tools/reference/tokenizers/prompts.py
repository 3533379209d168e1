"""
prompts.py — the test prompts for the tokenizer fixtures (make_fixtures.py). Each entry is (name, text) where text is
a str or, for invalid UTF-8, bytes. The same list drives the CLIP and the T5 fixtures.
"""

LONG_PROMPT = (
    "A breathtaking panoramic landscape of an ancient elven city built into colossal trees, glowing lanterns hanging "
    "from twisting branches, waterfalls cascading into turquoise pools, misty mountains in the background, golden "
    "hour sunlight filtering through the canopy, intricate carved wooden bridges connecting the platforms, birds "
    "flying overhead, hyper-detailed, ultra realistic, volumetric lighting, cinematic composition, 8k resolution, "
    "masterpiece, trending on artstation, concept art by several famous illustrators, sharp focus, octane render"
)

PROMPTS = [
    # sd3_arch_spec.md §10.4
    ("spec_cat", "a photo of a cat"),
    ("spec_cat_upper", "A photo of a CAT!!"),
    ("spec_astronaut", "astronaut riding a horse, 4k"),
    ("spec_hello", "Hello   world\n"),
    ("spec_empty", ""),
    # ordinary prompts
    ("typical_1", "a photograph of an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation"),
    ("typical_2", "portrait of a woman, oil painting, \"dramatic lighting\", 85mm f/1.8, bokeh"),
    ("typical_3", "(masterpiece:1.2), best quality, ((ultra detailed)), [lowres], {blurry}"),
    ("negative", "ugly, deformed, extra limbs, bad anatomy, watermark, text, signature, jpeg artifacts"),
    ("mixed_case", "A PHOTOGRAPH Of A MiXeD CaSe ThInG In NeW YoRk"),
    ("contractions", "I'm sure they'll say it's what we've done, you'd know; THEY'RE HERE, I'M OK, don't"),
    ("quotes_ascii", "'quoted' ''double'' 's 't \"dq\" it''s"),
    # accents, scripts
    ("accents", "a café in Paris, naïve art, résumé, Ångström, São Paulo, Crème brûlée, Straße, Œuvre"),
    ("combining", "naïve vs. nai\u0308ve, e\u0301cole, A\u030a, n\u0303"),
    ("japanese", "東京の夜景、ネオンサイン、桜の花"),
    ("chinese", "一只可爱的猫在花园里，山水画"),
    ("korean", "서울의 밤거리, 고양이"),
    ("greek_sigma", "ΟΔΥΣΣΕΥΣ σοφός ΣΊΣΥΦΟΣ Σ ΑΣ ΑΣ. Α'Σ ΑΣΑ"),
    ("cyrillic", "Русский текст: Москва, ЁЛКА, привет"),
    ("arabic_hebrew", "مرحبا بالعالم و שלום עולם"),
    ("devanagari_thai", "नमस्ते दुनिया, สวัสดีครับ"),
    ("turkish", "İstanbul'da ILIK bir gün, ıspanak"),
    ("mixed_scripts", "mixed: 日本語 and English and 中文 mixed123abc"),
    # emoji
    ("emoji", "a cat 😺 with sunglasses 😎🔥, rainbow 🌈"),
    ("emoji_zwj", "family 👨\u200d👩\u200d👧\u200d👦, flag 🇯🇵, thumbs 👍🏽, heart ❤️ vs ❤︎"),
    ("emoji_many", "🎉" * 40),
    # punctuation, digits, whitespace
    ("punctuation", "Wow!!! Really??? ... (yes) [no] {maybe} <tag> @user #hashtag $100 50% a&b * ~ ` ^ | \\ /"),
    ("digits", "1234567890 3.14159 1,000,000 2024-01-01 12:30 1st 2nd 3rd 4K 8k 1080p"),
    ("digits_other", "٣ ४ ๕ ①②③ Ⅻ ½ x² 10³"),
    ("spaces", "multiple     spaces    between words"),
    ("tabs_newlines", "tabs\tand\nnewlines\r\nand\r carriage\u000bvt\u000cff"),
    ("leading_trailing", "   leading and trailing spaces   "),
    ("only_spaces", "     "),
    ("only_whitespace", "\n\n\t \r\n"),
    ("unicode_spaces", "no\u00a0break\u2003em\u3000ideographic\u2028line\u2029para\u200bzero\u205fmath"),
    # ftfy territory
    ("html_entities", "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &eacute;l&egrave;ve &#x1F600; &nbsp;x &copy; 2024"),
    ("html_odd", "&EACUTE;COLE &amp;amp; &notanentity; &#59; &#x110000; &#0; &#128; &#xD800; &#65 &amp &AMP;"),
    ("html_with_lt", "a <b>bold</b> &amp; move"),
    ("html_lines", "first &amp; line\nsecond < line\nthird &amp; line"),
    ("curly_quotes", "“curly double” ‘curly single’ it’s don’t ‚low‛ „low double‟ ʼn"),
    ("fullwidth", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３！ ｶﾀｶﾅ ｶﾞ ￣"),
    ("ligatures", "ligatures: ﬁsh ﬂower ﬀ ﬃ ﬄ ﬅ ﬆ Ĳssel ŉ Ǆ ǅ ǆ Ǳ ǲ ǳ Ǉ ǈ ǉ"),
    ("control_chars", "control\x01chars\x07\x7f and\u200bzero width\u200d joiner\ufeffBOM\u206a"),
    ("ansi_escape", "ANSI \x1b[31mred\x1b[0m text \x1b[1;4mbold\x1b[ and \x1b[٣m"),
    ("c1_controls", "C1 controls: \x80\x81\x85\x8d\x91\x92\x93\x94\x9f end"),
    ("dashes_symbols", "em—dash – en dash … ellipsis • bullet · middle dot § ¶ ™ ® ©"),
    ("math", "math: x² + y³ = z½, ∑∫√∞ ≠ ≤ ≥ ±, µm, °C, Ω, K, Å"),
    ("long_s", "ſome long s 'ſ it'ſ <|ſtartoftext|>"),
    # special tokens in text
    ("special_literal", "<|startoftext|>a photo<|endoftext|> of a cat"),
    ("special_upper", "<|ENDOFTEXT|> upper special <|StartOfText|>"),
    ("pad_quirk", "a red ball!a blue ball! !! ! !!! !?! end!"),
    # structure
    ("url_email", "email: user@example.com, url: https://example.com/path?q=1&r=2"),
    ("identifiers", "__init__ snake_case kebab-case CamelCase hello.world,foo;bar:baz"),
    ("kaomoji", "smileys :) :-( ;-) <3 ^_^ ¯\\_(ツ)_/¯"),
    ("long_word", "a" * 300),
    ("long_words", "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis"),
    ("long_prompt", LONG_PROMPT),
    ("long_prompt_2", " ".join(["word%d" % i for i in range(120)])),
    ("long_prompt_3", "red, " * 60),
    # invalid UTF-8 (bytes)
    ("invalid_utf8", b"bad \xff\xfe bytes \xc3\x28 and \xe2\x82 trunc \xf0\x9f\x98 end"),
    ("invalid_surrogate", b"\xed\xa0\x80 surrogate \xc0\xaf overlong \xf4\x90\x80\x80 big"),
    # mojibake: ftfy's fix_encoding repairs it; this port does not (documented deviation)
    ("mojibake", "cafÃ© â€œquotesâ€\x9d"),
]
