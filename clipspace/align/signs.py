"""Pictures with known words: signs, labels, receipts and slides in English and Chinese, with the words listed.

Each picture shows words drawn from a vocabulary without repeats (until the vocabulary runs out), so a query for
one word names one picture. Signs, labels and receipts are photographs of things (a little blurred, noisy, JPEG),
with `metadata` the EXIF a phone writes (capture time, camera, GPS) and XMP keywords; slides are screenshots: PNG.
`words.json` lists every picture's file, kind, language and the vocabulary words it shows (prices and totals are
drawn too, but not listed). Chinese is set in Debian's Noto CJK (fonts-noto-cjk), else WenQuanYi Zen Hei.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from clipspace.align.photo_metadata import camera_exif, gps_position, xmp_packet

KINDS = ("sign", "label", "receipt", "slide")
LANGUAGES = ("en", "zh")
WORDS_FILE = "words.json"

# No word is another's substring, nor a name the files or their keywords carry (kinds, cities): a query for a
# word finds its picture and no other.
_ENGLISH = """bakery coffee pharmacy library harbour station museum garden kitchen market theatre bicycle
        parking entrance exit elevator stairway platform ticket office closed welcome fresh organic cheese butter
        honey mango lemon orange cherry walnut almond pepper garlic ginger noodle dumpling salmon tomato potato
        carrot spinach yogurt pastry biscuit muffin waffle pancake cocoa espresso latte mocha teapot kettle blanket
        pillow candle lantern compass anchor rocket planet comet meteor galaxy nebula quantum vector tensor matrix
        gradient kernel cluster shard replica latency budget roadmap quarterly revenue forecast milestone
        prototype feedback workshop seminar lecture chapter summary agenda hiking camping fishing sailing surfing
        skating cycling tennis hockey soccer rugby cricket violin guitar piano trumpet cello drummer umbrella
        raincoat sweater jacket scarf mittens sandals slippers hammer wrench pliers ladder bucket shovel marble
        granite copper silver bronze velvet linen cotton denim leather bamboo cedar maple willow tulip orchid
        daisy lotus cactus fern meadow canyon glacier island volcano desert prairie lagoon"""
_CHINESE = """面包 咖啡 药房 图书馆 港口 车站 博物馆 花园 厨房 市场 剧院 自行车 停车场 入口 出口 电梯 楼梯
        站台 车票 办公室 欢迎光临 新鲜 有机 奶酪 黄油 蜂蜜 芒果 柠檬 橙子 樱桃 核桃 杏仁 胡椒 大蒜 生姜 面条 饺子
        三文鱼 番茄 土豆 胡萝卜 菠菜 酸奶 糕点 饼干 松饼 华夫饼 煎饼 可可 拿铁 摩卡 茶壶 水壶 毛毯 枕头 蜡烛 灯笼
        指南针 火箭 行星 彗星 流星 银河 星云 量子 向量 张量 矩阵 梯度 集群 副本 延迟 预算 路线图 季度 收入 预测
        里程碑 原型 反馈 研讨会 讲座 章节 摘要 议程 徒步 露营 钓鱼 帆船 冲浪 滑冰 骑行 网球 冰球 足球 橄榄球 板球
        小提琴 吉他 钢琴 小号 大提琴 鼓手 雨伞 雨衣 毛衣 夹克 围巾 手套 凉鞋 拖鞋 锤子 扳手 钳子 梯子 水桶 铁锹
        大理石 花岗岩 青铜 丝绒 亚麻 棉布 牛仔布 皮革 竹子 雪松 枫树 柳树 郁金香 兰花 雏菊 荷花 仙人掌 蕨类 草原
        峡谷 冰川 岛屿 火山 沙漠 泻湖 营业时间 特价 促销"""
VOCABULARY = {"en": tuple(_ENGLISH.split()), "zh": tuple(_CHINESE.split())}
# What a kind says besides its words, per language (not listed: the benchmark asks for the vocabulary's words).
_CAPTIONS = {"en": {"total": "TOTAL", "thanks": "THANK YOU"}, "zh": {"total": "合计", "thanks": "谢谢惠顾"}}
_PLACES = (("Lisbon", 38.7223, -9.1393), ("Shanghai", 31.2304, 121.4737), ("Porto", 41.1579, -8.6291),
           ("Hangzhou", 30.2741, 120.1551), ("Kyoto", 35.0116, 135.7681))
_CAMERAS = (("Google", "Pixel 8"), ("Apple", "iPhone 15"), ("FUJIFILM", "X100V"), ("Xiaomi", "14 Ultra"))
_FONT_FOLDERS = (Path("/usr/share/fonts/opentype/noto"), Path("/usr/share/fonts/truetype/wqy"),
                 Path("/usr/share/fonts/truetype/dejavu"))
_CJK_FONTS = ("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", "NotoSerifCJK-Regular.ttc",
              "NotoSerifCJK-Bold.ttc", "wqy-zenhei.ttc")
_LATIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")
_NOTO_SIMPLIFIED = 2  # the face of a Noto CJK collection drawn for Simplified Chinese


@dataclass(frozen=True)
class Picture:
    """One written picture, as words.json lists it."""

    file: str
    kind: str
    language: str
    words: tuple[str, ...]


def write_signs(out: Path, n: int, seed: int, metadata: bool = True) -> Path:
    """Write `n` pictures into `out`, kinds and languages in turn, and the list of their words; answers its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocabulary = {language: _Draw(words, rng) for language, words in VOCABULARY.items()}
    pictures = []
    for index in range(n):
        kind, language = KINDS[index % len(KINDS)], LANGUAGES[index // len(KINDS) % len(LANGUAGES)]
        image, words = _RENDER[kind](rng, vocabulary[language], language)
        name = f"{kind}-{index:04d}-{language}." + ("png" if kind == "slide" else "jpg")
        _save(image, out / name, kind, rng, metadata)
        pictures.append(Picture(name, kind, language, tuple(words)))
    listing = out / WORDS_FILE
    listing.write_text(json.dumps([asdict(picture) for picture in pictures], ensure_ascii=False, indent=1) + "\n",
                       encoding="utf-8")
    return listing


def read_pictures(listing: Path) -> list[Picture]:
    """The pictures `write_signs` listed in `listing`."""
    return [Picture(entry["file"], entry["kind"], entry["language"], tuple(entry["words"]))
            for entry in json.loads(Path(listing).read_text(encoding="utf-8"))]


class _Draw:
    """Words of one language in a seeded order, without repeats until all were drawn."""

    def __init__(self, words: tuple[str, ...], rng: np.random.Generator) -> None:
        self.words, self.rng, self.order = words, rng, []

    def __call__(self, count: int) -> list[str]:
        drawn = []
        for _ in range(count):
            if not self.order:
                self.order = [self.words[i] for i in self.rng.permutation(len(self.words))]
            drawn.append(self.order.pop())
        return drawn


def _sign(rng: np.random.Generator, draw: _Draw, language: str) -> tuple[Image.Image, list[str]]:
    """A board on a street: one word large, two below it, slightly turned."""
    words = draw(3)
    image = _scene(rng, (640, 360))
    ink, paper = _contrasting(rng)
    board = Image.new("RGBA", (520, 240), (*paper, 255))
    pen = ImageDraw.Draw(board)
    _centred(pen, words[0], _font(rng, language, int(rng.integers(60, 76)), bold=True), 30, ink, 520)
    _centred(pen, " ".join(words[1:]), _font(rng, language, int(rng.integers(36, 44))), 140, ink, 520)
    turned = board.rotate(float(rng.uniform(-4, 4)), resample=Image.Resampling.BICUBIC, expand=True)
    image.paste(turned, ((640 - turned.width) // 2, (360 - turned.height) // 2), turned)
    return image, words


def _label(rng: np.random.Generator, draw: _Draw, language: str) -> tuple[Image.Image, list[str]]:
    """A product's label: its name, a word that describes it, and a price."""
    words = draw(2)
    image = _scene(rng, (480, 320))
    ink, paper = _contrasting(rng)
    pen = ImageDraw.Draw(image)
    pen.rounded_rectangle((40, 40, 440, 280), radius=24, fill=paper, outline=ink, width=4)
    _centred(pen, words[0], _font(rng, language, int(rng.integers(50, 62)), bold=True), 70, ink, 480)
    _centred(pen, words[1], _font(rng, language, int(rng.integers(30, 38))), 160, ink, 480)
    _centred(pen, f"{rng.uniform(1, 99):.2f}", _font(rng, "en", 30), 215, ink, 480)
    return image, words


def _receipt(rng: np.random.Generator, draw: _Draw, language: str) -> tuple[Image.Image, list[str]]:
    """A till receipt on a table: the shop, five items with prices, the total, in small print."""
    words = draw(6)
    image = _scene(rng, (400, 720))
    paper = Image.new("RGB", (320, 640), (250, 248, 240))
    pen = ImageDraw.Draw(paper)
    ink = (30, 30, 30)
    _centred(pen, words[0], _font(rng, language, 34, bold=True), 30, ink, 320)
    body = _font(rng, language, int(rng.integers(22, 27)))
    prices = [float(rng.uniform(1, 40)) for _ in words[1:]]
    for line, (word, price) in enumerate(zip(words[1:], prices, strict=True)):
        top = 120 + 60 * line
        pen.text((24, top), word, font=body, fill=ink)
        pen.text((220, top), f"{price:6.2f}", font=_font(rng, "en", 22), fill=ink)
    pen.line((24, 440, 296, 440), fill=ink, width=2)
    pen.text((24, 460), _CAPTIONS[language]["total"], font=body, fill=ink)
    pen.text((220, 460), f"{sum(prices):6.2f}", font=_font(rng, "en", 22), fill=ink)
    _centred(pen, _CAPTIONS[language]["thanks"], body, 560, ink, 320)
    image.paste(paper.rotate(float(rng.uniform(-3, 3)), resample=Image.Resampling.BICUBIC, fillcolor=(90, 70, 50)),
                (40, 40))
    return image, words


def _slide(rng: np.random.Generator, draw: _Draw, language: str) -> tuple[Image.Image, list[str]]:
    """A presentation slide: a title and three bullets."""
    words = draw(5)
    ink, paper = _contrasting(rng)
    image = Image.new("RGB", (960, 540), paper)
    pen = ImageDraw.Draw(image)
    pen.rectangle((0, 0, 960, 14), fill=ink)
    pen.text((64, 60), words[0], font=_font(rng, language, 56, bold=True), fill=ink)
    bullets = (words[1], f"{words[2]} {words[3]}", words[4])
    for line, bullet in enumerate(bullets):
        top = 200 + 90 * line
        pen.ellipse((72, top + 14, 88, top + 30), fill=ink)
        pen.text((112, top), bullet, font=_font(rng, language, 40), fill=ink)
    return image, words


_RENDER = {"sign": _sign, "label": _label, "receipt": _receipt, "slide": _slide}


def _save(image: Image.Image, file: Path, kind: str, rng: np.random.Generator, metadata: bool) -> None:
    if kind == "slide":
        image.save(file, "PNG")
        return
    extra = {}
    image = _photographed(image, rng)
    if metadata:
        place, lat, lon = _PLACES[int(rng.integers(len(_PLACES)))]
        make, model = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
        taken = (f"{rng.integers(2019, 2026)}:{rng.integers(1, 13):02d}:{rng.integers(1, 29):02d} "
                 f"{rng.integers(7, 22):02d}:{rng.integers(60):02d}:{rng.integers(60):02d}")
        extra = {"exif": camera_exif(taken=taken, offset=None, make=make, model=model, gps=gps_position(lat, lon)),
                 "xmp": xmp_packet(kind, place)}
    image.save(file, "JPEG", quality=int(rng.integers(70, 93)), **extra)


def _photographed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """As a phone's camera sees it: a little out of focus, with sensor noise."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.3)))), np.float32)
    noisy = blurred + rng.normal(0, float(rng.uniform(2, 8)), blurred.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A blurred backdrop of soft shapes, as behind a sign in a photo."""
    width, height = size
    top, bottom = rng.integers(40, 200, 3), rng.integers(40, 200, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(20, 120)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(30, 220, 3)))
    return image.filter(ImageFilter.GaussianBlur(6))


def _contrasting(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Ink and paper colours far enough apart in brightness to read: dark on light, or light on dark."""
    dark = tuple(int(c) for c in rng.integers(0, 70, 3))
    light = tuple(int(c) for c in rng.integers(200, 256, 3))
    return (dark, light) if rng.random() < 0.7 else (light, dark)


def _centred(pen: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, top: int,
             ink: tuple[int, int, int], width: int) -> None:
    left, _, right, _ = pen.textbbox((0, 0), text, font=font)
    pen.text(((width - (right - left)) // 2, top), text, font=font, fill=ink)


def _font(rng: np.random.Generator, language: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """A seeded choice among the fonts present that can write `language` (Noto CJK writes both)."""
    names = [name for name in _fonts(language) if ("Bold" in name) == bold] or list(_fonts(language))
    file = names[int(rng.integers(len(names)))]
    return _load_font(file, size)


@cache
def _fonts(language: str) -> tuple[str, ...]:
    names = _CJK_FONTS if language == "zh" else _CJK_FONTS[:4] + _LATIN_FONTS
    found = tuple(str(folder / name) for name in names for folder in _FONT_FOLDERS if (folder / name).exists())
    if not found:
        raise FileNotFoundError(f"no font for {language} text under {', '.join(map(str, _FONT_FOLDERS))}: "
                                "install fonts-noto-cjk (apt-get install fonts-noto-cjk)")
    return found


@cache
def _load_font(file: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(file, size, index=_NOTO_SIMPLIFIED if "Noto" in file else 0)

