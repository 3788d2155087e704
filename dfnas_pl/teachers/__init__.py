from dfnas_pl.teachers.loading import Teacher, build_arch, load_teacher, save_teacher
from dfnas_pl.teachers.module import TeacherClassifier

__all__ = ["Teacher", "TeacherClassifier", "build_arch", "load_teacher", "save_teacher"]
