"""The admin UI's Arabic words for the service's statuses, roles and outcomes, and its notices.

Kept in one place so that every page names a thing the same way.
"""

from __future__ import annotations

from types import MappingProxyType

from mailer.auth import Area

EDITION_STATUS = MappingProxyType(
    {
        "planned": "قيد التحضير",
        "sending": "جارٍ الإرسال",
        "paused": "متوقفة مؤقتاً",
        "sent": "أُرسلت",
        "cancelled": "أُلغيت",
        "failed": "فشلت",
        "skipped": "لم تُرسل (لا جديد)",
    }
)
DELIVERY_STATUS = MappingProxyType(
    {
        "queued": "في الانتظار",
        "sending": "قيد الإرسال",
        "sent": "أُرسلت",
        "deferred": "مؤجلة",
        "failed": "فشلت",
        "bounced": "ارتدّت",
        "suppressed": "محظورة",
        "cancelled": "أُلغيت",
    }
)
READER_STATUS = MappingProxyType(
    {
        "pending": "بانتظار التأكيد",
        "active": "نشط",
        "unsubscribed": "ألغى اشتراكه",
        "bounced": "بريده يرتد",
        "complained": "أبلغ عن إزعاج",
    }
)
KIND = MappingProxyType({"alert": "تنبيه عاجل", "digest": "نشرة"})
CADENCE = MappingProxyType({"instant": "فوري", "daily": "يومية", "weekly": "أسبوعية"})
ROLE = MappingProxyType({"editor": "محرر", "operator": "مشغّل", "admin": "مدير"})
OUTCOME = MappingProxyType(
    {
        "sent": "وصلت إلى الخادم",
        "temporary": "رفض مؤقت",
        "permanent": "رفض دائم",
        "hard_bounce": "عنوان غير موجود",
    }
)
WEEKDAYS = MappingProxyType(
    {
        "mon": "الاثنين",
        "tue": "الثلاثاء",
        "wed": "الأربعاء",
        "thu": "الخميس",
        "fri": "الجمعة",
        "sat": "السبت",
        "sun": "الأحد",
    }
)
#: Statuses after which an edition changes no more (the page stops polling).
FINAL = frozenset({"sent", "cancelled", "failed", "skipped"})

#: The navigation: (path, label, area that must be allowed; None = everyone signed in).
NAV: tuple[tuple[str, str, Area | None], ...] = (
    ("/admin/", "الرئيسية", None),
    ("/admin/stories", "الأخبار", Area.STORIES),
    ("/admin/editions", "الإرسالات", Area.EDITIONS),
    ("/admin/schedules", "المواعيد", Area.SCHEDULES),
    ("/admin/readers", "القرّاء", Area.SUBSCRIBERS),
    ("/admin/suppressions", "قائمة الحظر", Area.SUPPRESSIONS),
    ("/admin/outbox", "صندوق الصادر", Area.EDITIONS),
    ("/admin/smtp", "خوادم البريد", Area.SMTP),
    ("/admin/tokens", "مفاتيح الواجهة البرمجية", Area.TOKENS),
)

#: Notices shown after a form succeeded (``?msg=key``): only these fixed texts can appear.
NOTICES = MappingProxyType(
    {
        "story_added": "أُضيف الخبر.",
        "story_updated": "كان الخبر موجوداً بالرابط نفسه فحُدّثت بياناته.",
        "alert_started": "بدأ إرسال التنبيه العاجل.",
        "alert_exists": "أُرسل تنبيه هذا الخبر من قبل، وهذه صفحته.",
        "paused": "أُوقف الإرسال مؤقتاً.",
        "resumed": "استُؤنف الإرسال.",
        "cancelled": "أُلغي ما تبقّى من الإرسال.",
        "resent": "أُعيدت الرسائل الفاشلة إلى قائمة الإرسال.",
        "nothing_to_resend": "لا توجد رسائل فاشلة لإعادة إرسالها.",
        "digest_started": "بدأ إرسال النشرة.",
        "digest_skipped": "لا أخبار جديدة منذ آخر نشرة، فلم تُرسل.",
        "schedule_added": "أُضيف الموعد.",
        "schedule_saved": "حُفظ الموعد.",
        "schedule_paused": "أُوقف الموعد مؤقتاً.",
        "schedule_resumed": "استُؤنف الموعد.",
        "schedule_removed": "حُذف الموعد.",
        "unsubscribed": "أُلغي اشتراك القارئ في كل الرسائل.",
        "suppressed": "أُضيف العنوان إلى قائمة الحظر.",
        "already_suppressed": "العنوان محظور من قبل.",
        "unsuppressed": "رُفع الحظر عن العنوان.",
        "server_added": "أُضيف خادم البريد.",
        "server_saved": "حُفظت إعدادات الخادم.",
        "server_removed": "حُذف خادم البريد.",
        "token_revoked": "أُلغي المفتاح، ولن يُقبل بعد الآن.",
        "signed_out": "سجّلت الخروج.",
    }
)
