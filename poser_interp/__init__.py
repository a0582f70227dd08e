"""poser_interp: catch alignment-faking language models by looking inside them.

The public surface notebooks use; everything else may change.
"""

from .core.hooks import add_vector as add_vector
from .core.models import HookedModel as HookedModel
from .core.models import ModelSpec as ModelSpec
from .core.models import load_hf as load_hf
from .core.models import load_model as load_model
from .core.models import load_tokenizer as load_tokenizer
from .core.scoring import answer_logits as answer_logits
from .core.scoring import answer_probs as answer_probs
from .core.scoring import p_misaligned as p_misaligned
from .core.tokens import PromptFormat as PromptFormat
from .data.scenario import AnswerFormat as AnswerFormat
from .data.scenario import Fact as Fact
from .data.scenario import FactRole as FactRole
from .data.scenario import Oversight as Oversight
from .data.scenario import Scenario as Scenario
from .data.scenario_files import load_scenarios as load_scenarios
from .data.scenario_files import save_scenarios as save_scenarios
from .errors import AdapterMismatchError as AdapterMismatchError
from .errors import AnswerChoiceError as AnswerChoiceError
from .errors import BackendError as BackendError
from .errors import DataError as DataError
from .errors import LayerError as LayerError
from .errors import ModelLoadError as ModelLoadError
from .errors import PoserInterpError as PoserInterpError
from .errors import PromptTooLongError as PromptTooLongError

__version__ = "0.1.0"
